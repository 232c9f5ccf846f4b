//! The figures the metrics read when scraped: every pool's capacity (as `pool.show` has
//! it), the tree's counts, pending intents, jobs, the drivers' cached status and the audit
//! backlog. Reads only: the database through its thread, each pool's usage off the event
//! loop, the driver cache (no probe runs).

use std::collections::BTreeMap;

use ciborium::Value;

use super::Engine;
use crate::model::Pool as PoolInfo;
use crate::store::TreeCounts;

/// Jobs of one op and state: how many, and the bytes they have done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobFigures {
    /// Jobs.
    pub jobs: u64,
    /// Their `done` summed (bytes: imports, uploads and verifies count bytes).
    pub done_bytes: u64,
}

/// Everything a scrape reports about the engine's state.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Each pool as `pool.show` reports it; the pools whose usage could not be read are
    /// in `unreadable`, with the reason.
    pub pools: Vec<PoolInfo>,
    /// Pools whose figures could not be read: (pool, why).
    pub unreadable: Vec<(String, String)>,
    /// Shares, snapshots, exports, attachments and intents, grouped.
    pub counts: TreeCounts,
    /// Jobs in the log (its newest 1000, running ones with live progress) by (op, state).
    pub jobs: BTreeMap<(String, String), JobFigures>,
    /// Each driver: whether its last probe found it usable.
    pub drivers: Vec<(String, bool)>,
    /// Audit entries queued and not yet written.
    pub audit_backlog: u64,
    /// Audit entries this process could not write.
    pub audit_unwritten: u64,
}

impl Engine {
    /// Read the figures for a scrape. A pool that cannot be read is reported as such, not
    /// as an error of the whole scrape; the database failing is an error.
    pub async fn gauges(&self) -> crate::error::Result<Gauges> {
        let mut g = Gauges::default();
        for name in self.pool_names() {
            match self.pool_info(&name).await {
                Ok(p) => g.pools.push(p),
                Err(e) => {
                    log::debug!("metrics: pool {name}: {e}");
                    g.unreadable.push((name, e.to_string()));
                }
            }
        }
        g.counts = self.store.call(|c| crate::store::tree_counts(c)).await?;
        for j in self.jobs.list(&self.store).await? {
            let f = g.jobs.entry((j.op, j.state)).or_default();
            f.jobs += 1;
            f.done_bytes = f.done_bytes.saturating_add(j.done);
        }
        if let (Value::Map(pairs), _) = self.driver_status() {
            for (k, v) in pairs {
                if let (Value::Text(d), Value::Text(s)) = (k, v) {
                    g.drivers.push((d, s == "usable"));
                }
            }
        }
        g.audit_backlog = self.store.audit_backlog();
        g.audit_unwritten = self.store.audit_unwritten();
        Ok(g)
    }
}
