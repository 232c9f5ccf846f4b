//! Where a new volume goes: the appliances a request's topology allows (requisite), in the
//! order it prefers them (preferred), then by free space in the pool; and the pool figures
//! GetCapacity reports. Each appliance is one segment `topology.shelf.io/node=<name>`.

use std::collections::HashMap;

use bpfman_csi::v1::{Topology, TopologyRequirement};
use serde::Deserialize;
use shelf::proto::{PoolRef, Request};
use tonic::{Code, Status};

use crate::appliance::Appliance;
use crate::config::{Config, TOPOLOGY_KEY};
use crate::objects;

/// The capacity figures of one pool (docs/protocol.md §8.15 `pool`).
#[derive(Debug, Clone, Deserialize)]
pub struct PoolFigures {
    /// The pool's name.
    pub name: String,
    /// Bytes free on its filesystem.
    pub free: u64,
    /// Bytes kept free: creates are refused once `free` is at or below it.
    #[serde(default)]
    pub reserved: u64,
    /// What the over-subscription limit still allows to be provisioned.
    #[serde(default)]
    pub available_to_provision: Option<u64>,
}

impl PoolFigures {
    /// The largest new volume shelf would accept now: nothing once free space is at the
    /// reserve, else what the over-subscription limit leaves.
    pub fn available(&self) -> u64 {
        if self.free <= self.reserved {
            return 0;
        }
        self.available_to_provision.unwrap_or(self.free)
    }
}

/// The segment of appliance `name`.
pub fn segment(name: &str) -> Topology {
    Topology {
        segments: HashMap::from([(TOPOLOGY_KEY.to_string(), name.to_string())]),
    }
}

/// The appliance a topology names, if it names one by our key.
fn named(t: &Topology) -> Option<&str> {
    t.segments.get(TOPOLOGY_KEY).map(String::as_str)
}

/// Whether `appliance` is allowed by the requisite topologies (all are, without any).
pub fn allowed(req: Option<&TopologyRequirement>, appliance: &str) -> bool {
    match req {
        Some(r) if !r.requisite.is_empty() => {
            r.requisite.iter().any(|t| named(t) == Some(appliance))
        }
        _ => true,
    }
}

/// The pool a volume goes to on `a`: the request's, the appliance's configured one, or
/// shelfd's default (`default`, else its only pool).
pub async fn pool_name(a: &Appliance, param: Option<&str>) -> Result<String, Status> {
    if let Some(p) = param.or(a.pool.as_deref()) {
        return Ok(p.to_string());
    }
    let pools: Vec<PoolFigures> = objects::decode(a, a.call(Request::PoolList).await?)?;
    if pools.iter().any(|p| p.name == "default") {
        return Ok("default".into());
    }
    match pools.as_slice() {
        [only] => Ok(only.name.clone()),
        _ => Err(Status::invalid_argument(format!(
            "appliance {} has several pools and none named default: give the pool parameter",
            a.name
        ))),
    }
}

/// The figures of the pool a volume would use on `a`; `None` when the pool does not exist
/// there.
pub async fn figures(a: &Appliance, param: Option<&str>) -> Result<Option<PoolFigures>, Status> {
    let name = pool_name(a, param).await?;
    let req = Request::PoolShow(PoolRef { name });
    match objects::found(a.call(req).await)? {
        Some(v) => objects::decode(a, v).map(Some),
        None => Ok(None),
    }
}

/// The appliances to try for a new volume, best first, each with its pool: the allowed
/// ones in the order of `preferred`, then the rest by most free space. An appliance that
/// cannot be reached or lacks the pool is left out (logged); RESOURCE_EXHAUSTED when none
/// is left.
pub async fn candidates(
    cfg: &Config,
    req: Option<&TopologyRequirement>,
    pool: Option<&str>,
) -> Result<Vec<(Appliance, String)>, Status> {
    let mut ranked = Vec::new();
    let mut last: Option<Status> = None;
    for a in objects::appliances(cfg) {
        if !allowed(req, &a.name) {
            continue;
        }
        match figures(&a, pool).await {
            Ok(Some(f)) => ranked.push((a, f)),
            Ok(None) => {
                log::info!("appliance {}: no pool {pool:?}; not placing there", a.name);
                last = Some(Status::invalid_argument(format!(
                    "appliance {} has no pool {}",
                    a.name,
                    pool.unwrap_or("(default)")
                )));
            }
            Err(e) if e.code() == Code::Unavailable => {
                log::warn!("appliance {}: {}; not placing there", a.name, e.message());
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    let preferred: Vec<&str> = req
        .map(|r| r.preferred.iter().filter_map(named).collect())
        .unwrap_or_default();
    let rank = |name: &str| {
        preferred
            .iter()
            .position(|p| *p == name)
            .unwrap_or(usize::MAX)
    };
    ranked.sort_by(|(a, fa), (b, fb)| {
        rank(&a.name)
            .cmp(&rank(&b.name))
            .then(fb.free.cmp(&fa.free))
    });
    if ranked.is_empty() {
        return Err(match last {
            Some(e) if e.code() == Code::Unavailable => e,
            Some(e) if e.code() == Code::InvalidArgument && req.is_none() => e,
            _ => Status::resource_exhausted(
                "no appliance allowed by the accessibility requirements has the pool",
            ),
        });
    }
    Ok(ranked.into_iter().map(|(a, f)| (a, f.name)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(requisite: &[&str], preferred: &[&str]) -> TopologyRequirement {
        TopologyRequirement {
            requisite: requisite.iter().map(|n| segment(n)).collect(),
            preferred: preferred.iter().map(|n| segment(n)).collect(),
        }
    }

    #[test]
    fn requisite_limits_the_appliances() {
        assert!(allowed(None, "a1"));
        assert!(allowed(Some(&req(&[], &["a2"])), "a1"));
        assert!(allowed(Some(&req(&["a1", "a2"], &[])), "a2"));
        assert!(!allowed(Some(&req(&["a2"], &[])), "a1"));
        let other = TopologyRequirement {
            requisite: vec![Topology {
                segments: HashMap::from([("zone".into(), "a1".into())]),
            }],
            preferred: vec![],
        };
        assert!(!allowed(Some(&other), "a1"));
    }

    #[test]
    fn available_is_zero_at_the_reserve() {
        let f = |free, reserved, atp| PoolFigures {
            name: "p".into(),
            free,
            reserved,
            available_to_provision: atp,
        };
        assert_eq!(f(10, 10, Some(5)).available(), 0);
        assert_eq!(f(11, 10, Some(5)).available(), 5);
        assert_eq!(f(11, 0, None).available(), 11);
    }
}
