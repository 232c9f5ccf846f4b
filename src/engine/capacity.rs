//! Capacity guards: the figures a create, clone, snapshot or grow is checked against.
//!
//! The pool's free space is read off the event loop before the request's first commit,
//! or, where reading it is one `statvfs` ([`Pool::admit_is_cheap`]), inside that commit
//! on the database thread, which saves a hand-over; the provisioned total is read inside
//! that commit's transaction, so two requests racing for the last of a pool cannot both
//! pass (the database serialises them).

use std::sync::Arc;

use rusqlite::Connection;

use super::{blocking, Engine};
use crate::error::{Error, Result};
use crate::model::{check_capacity, Capacity, CapacityPolicy, Demand};
use crate::pool::Pool;
use crate::store;

/// A pool's policy and storage figures, read just before a decision.
#[derive(Debug, Clone)]
pub(super) struct Room {
    pool: String,
    policy: CapacityPolicy,
    figures: Figures,
}

/// The pool's size and free space: read already, or read at the check.
#[derive(Debug, Clone)]
enum Figures {
    Read { size: u64, free: u64 },
    AtCheck(Arc<dyn Pool>),
}

impl Room {
    /// Refuse `demand` with `no_space` (naming `what` and the figures) if the pool cannot
    /// take it. Runs inside the transaction that records the request.
    pub(super) fn check(&self, c: &Connection, what: &str, demand: Demand) -> Result<()> {
        let (size, free) = match &self.figures {
            Figures::Read { size, free } => (*size, *free),
            Figures::AtCheck(pool) => {
                let usage = pool.admit()?;
                (usage.size, usage.free)
            }
        };
        let provisioned = store::provisioned(c, &self.pool)?;
        let cap = Capacity {
            size,
            free,
            provisioned,
        };
        check_capacity(&self.pool, &self.policy, &cap, demand)
            .map_err(|e| Error::NoSpace(format!("{what}: {e}")))
    }
}

impl Engine {
    /// The capacity policy of a pool (the default policy if the config names none).
    pub(super) fn policy(&self, pool: &str) -> CapacityPolicy {
        self.policies
            .read()
            .expect("policies lock")
            .get(pool)
            .copied()
            .unwrap_or_default()
    }

    /// Read a pool's figures for a capacity decision.
    pub(super) async fn room(&self, pool: &Arc<dyn Pool>) -> Result<Room> {
        let figures = if pool.admit_is_cheap() {
            Figures::AtCheck(pool.clone())
        } else {
            let p = pool.clone();
            let usage = blocking(move || p.admit()).await?;
            Figures::Read {
                size: usage.size,
                free: usage.free,
            }
        };
        Ok(Room {
            pool: pool.name().to_string(),
            policy: self.policy(pool.name()),
            figures,
        })
    }
}
