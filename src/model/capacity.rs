//! Capacity rules: how much a pool may promise, and when it must refuse new work.
//!
//! Two limits, as Cinder's schedulers apply them to thin pools:
//! - **reserve**: `reserved_percentage` of the pool's storage is kept free for the data
//!   already promised. New work (a create, clone, snapshot or grow) is refused once the free
//!   space is at or below it, and a preallocated volume must fit above it.
//! - **over-subscription**: the sizes of all shares together (`provisioned`) may not exceed
//!   `max_over_subscription_ratio` × the usable size (size minus the reserve).

use serde::Serialize;

use super::size::format_size;
use super::Invalid;

/// A pool's capacity policy, from its config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CapacityPolicy {
    /// Percent of the pool kept free (0 to 99).
    pub reserved_percentage: u8,
    /// How many times the usable size the shares' sizes may add up to (1.0 or more).
    pub max_over_subscription_ratio: f64,
}

impl Default for CapacityPolicy {
    fn default() -> Self {
        CapacityPolicy {
            reserved_percentage: 0,
            max_over_subscription_ratio: 20.0,
        }
    }
}

impl CapacityPolicy {
    /// Check the policy's own values (from an untrusted config).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.reserved_percentage > 99 {
            return Err(Invalid::new(format!(
                "reserved_percentage {} must be between 0 and 99",
                self.reserved_percentage
            )));
        }
        let r = self.max_over_subscription_ratio;
        if !r.is_finite() || !(1.0..=1000.0).contains(&r) {
            return Err(Invalid::new(format!(
                "max_over_subscription_ratio {r} must be between 1.0 and 1000.0"
            )));
        }
        Ok(())
    }

    /// Bytes kept free in a pool of `size` bytes.
    pub fn reserved(&self, size: u64) -> u64 {
        (size as u128 * self.reserved_percentage as u128 / 100) as u64
    }

    /// The most the shares' sizes may add up to in a pool of `size` bytes.
    pub fn provisioning_limit(&self, size: u64) -> u64 {
        let usable = size - self.reserved(size);
        let limit = usable as f64 * self.max_over_subscription_ratio;
        if limit >= u64::MAX as f64 {
            u64::MAX
        } else {
            limit as u64
        }
    }
}

/// A pool's figures at the moment of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The pool's storage size.
    pub size: u64,
    /// Bytes free on it.
    pub free: u64,
    /// Sum of its shares' sizes.
    pub provisioned: u64,
}

/// What a request asks of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// A new share (create or clone) of this many bytes; `preallocated` when its blocks
    /// are allocated up front.
    Share {
        /// Size in bytes.
        size: u64,
        /// Whether the space is taken now.
        preallocated: bool,
    },
    /// Growing a share by this many bytes.
    Grow {
        /// Bytes added.
        by: u64,
        /// Whether the added space is taken now.
        preallocated: bool,
    },
    /// A snapshot: promises nothing new, but needs room above the reserve.
    Snapshot,
}

/// Whether `pool` may take on `demand`; the refusal names the figures behind it.
pub fn check_capacity(
    pool: &str,
    policy: &CapacityPolicy,
    cap: &Capacity,
    demand: Demand,
) -> Result<(), String> {
    let reserved = policy.reserved(cap.size);
    if cap.free <= reserved {
        return Err(format!(
            "pool {pool}: {} free is at or below the {} reserved ({}% of {}); new work is refused until space is freed",
            format_size(cap.free),
            format_size(reserved),
            policy.reserved_percentage,
            format_size(cap.size)
        ));
    }
    let (more, preallocated) = match demand {
        Demand::Share { size, preallocated } => (size, preallocated),
        Demand::Grow { by, preallocated } => (by, preallocated),
        Demand::Snapshot => return Ok(()),
    };
    if preallocated && more > cap.free - reserved {
        return Err(format!(
            "pool {pool}: allocating {} needs more than the {} free above the {} reserved",
            format_size(more),
            format_size(cap.free - reserved),
            format_size(reserved)
        ));
    }
    let limit = policy.provisioning_limit(cap.size);
    let sum = cap.provisioned.checked_add(more);
    let total = sum.unwrap_or(u64::MAX);
    if sum.is_none() || total > limit {
        return Err(format!(
            "pool {pool}: {} more would make {} provisioned, over the limit of {} ({} × {} usable)",
            format_size(more),
            format_size(total),
            format_size(limit),
            policy.max_over_subscription_ratio,
            format_size(cap.size - reserved)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn policy(reserved: u8, ratio: f64) -> CapacityPolicy {
        CapacityPolicy {
            reserved_percentage: reserved,
            max_over_subscription_ratio: ratio,
        }
    }

    #[test]
    fn over_subscription_counts_every_share() {
        let p = policy(0, 2.0);
        let cap = Capacity {
            size: 10 * GIB,
            free: 10 * GIB,
            provisioned: 15 * GIB,
        };
        let thin = |size| Demand::Share {
            size,
            preallocated: false,
        };
        assert!(check_capacity("p", &p, &cap, thin(5 * GIB)).is_ok());
        let e = check_capacity("p", &p, &cap, thin(5 * GIB + 1)).unwrap_err();
        assert!(e.contains("over the limit of 20G"), "{e}");
        let grow = Demand::Grow {
            by: 6 * GIB,
            preallocated: false,
        };
        assert!(check_capacity("p", &p, &cap, grow).is_err());
    }

    #[test]
    fn the_reserve_stops_new_work_and_bounds_preallocation() {
        let p = policy(10, 20.0);
        let low = Capacity {
            size: 10 * GIB,
            free: GIB,
            provisioned: 0,
        };
        let e = check_capacity("p", &p, &low, Demand::Snapshot).unwrap_err();
        assert!(e.contains("reserved (10%"), "{e}");
        let ok = Capacity {
            free: 3 * GIB,
            ..low
        };
        assert!(check_capacity("p", &p, &ok, Demand::Snapshot).is_ok());
        let thick = |size| Demand::Share {
            size,
            preallocated: true,
        };
        assert!(check_capacity("p", &p, &ok, thick(2 * GIB)).is_ok());
        assert!(check_capacity("p", &p, &ok, thick(2 * GIB + 1)).is_err());
    }

    #[test]
    fn limits_do_not_overflow() {
        let p = policy(0, 1000.0);
        assert_eq!(p.provisioning_limit(u64::MAX), u64::MAX);
        let cap = Capacity {
            size: u64::MAX,
            free: u64::MAX,
            provisioned: u64::MAX,
        };
        let d = Demand::Share {
            size: u64::MAX,
            preallocated: false,
        };
        assert!(check_capacity("p", &p, &cap, d).is_err());
        assert!(policy(100, 1.0).validate().is_err());
        assert!(policy(0, 0.5).validate().is_err());
        assert!(policy(0, f64::NAN).validate().is_err());
    }
}
