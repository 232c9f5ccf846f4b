//! Allocation figures for `pool.show`/`pool.list` and `share.show`: what volumes really
//! take, beside what was promised (`provisioned`, `size`).
//!
//! A file pool's figure costs a stat of every volume and snapshot (bounded:
//! `pool::file::MAX_OBJECTS`), an LVM pool's one `lvs` (bounded by the runner's timeout):
//! too much for every request. So each pool's last pass is cached, and a request never
//! waits for a pass except the very first one for a pool: a request that finds the figure
//! older than [`MAX_AGE`] is answered with it at once and starts one pass in the
//! background (unless one is running already), which replaces it when done. At most one
//! pass per pool at a time, however many clients ask. A pass that fails is logged and
//! leaves no figure (`allocated` is left out of the reply) until the next one succeeds.
//! `share.show` of a file pool's share stats that one file instead (O(1), always current).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{blocking, Engine};
use crate::error::Result;
use crate::pool::{Allocation, Pool};

/// How old a pool's cached allocation may get before a request starts a new pass.
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// One pool's cache: the last pass's figures (`None` when it failed) and when it ended,
/// whether a pass is running, and the lock the pool's first pass is made under.
#[derive(Debug, Default)]
struct Slot {
    last: Mutex<Last>,
    first: async_lock::Mutex<()>,
}

#[derive(Debug, Default)]
struct Last {
    figures: Option<(Instant, Option<Arc<Allocation>>)>,
    refreshing: bool,
}

/// Each pool's last allocation pass and when it was made.
#[derive(Debug, Default)]
pub(super) struct AllocationCache {
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
}

impl AllocationCache {
    fn slot(&self, pool: &str) -> Arc<Slot> {
        self.slots
            .lock()
            .expect("allocation cache")
            .entry(pool.to_string())
            .or_default()
            .clone()
    }
}

impl Slot {
    /// The cached figures if there are any, and whether the caller should start a pass
    /// (they are stale and none is running; the slot is marked as refreshing).
    fn cached(&self) -> Option<(Option<Arc<Allocation>>, bool)> {
        let mut last = self.last.lock().expect("allocation slot");
        let (at, figures) = last.figures.clone()?;
        let refresh = at.elapsed() >= MAX_AGE && !last.refreshing;
        if refresh {
            last.refreshing = true;
        }
        Some((figures, refresh))
    }

    fn store(&self, figures: Option<Arc<Allocation>>) {
        let mut last = self.last.lock().expect("allocation slot");
        last.figures = Some((Instant::now(), figures));
        last.refreshing = false;
    }
}

/// One pass over `pool` off the event loop; a failure is logged and gives no figures.
async fn pass(pool: Arc<dyn Pool>) -> Option<Arc<Allocation>> {
    let p = pool.clone();
    match blocking(move || p.allocation()).await {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            log::warn!("pool {}: allocation pass failed: {e}", pool.name());
            None
        }
    }
}

impl Engine {
    /// `pool`'s allocation from its last pass (`None` if that pass failed); only the first
    /// request for a pool waits for a pass, a stale figure starts one in the background.
    pub(super) async fn pool_allocation(&self, pool: &Arc<dyn Pool>) -> Option<Arc<Allocation>> {
        let slot = self.allocations.slot(pool.name());
        if let Some(figures) = self.cached_allocation(&slot, pool) {
            return figures;
        }
        let _first = slot.first.lock().await;
        if let Some(figures) = self.cached_allocation(&slot, pool) {
            return figures;
        }
        let figures = pass(pool.clone()).await;
        slot.store(figures.clone());
        figures
    }

    /// The slot's figures if it has any, starting a background pass when they are stale.
    fn cached_allocation(
        &self,
        slot: &Arc<Slot>,
        pool: &Arc<dyn Pool>,
    ) -> Option<Option<Arc<Allocation>>> {
        let (figures, refresh) = slot.cached()?;
        if refresh {
            let (slot, pool) = (slot.clone(), pool.clone());
            smol::spawn(async move { slot.store(pass(pool).await) }).detach();
        }
        Some(figures)
    }

    /// The bytes really allocated to share `id`'s volume in `pool`: the file's own blocks
    /// where the pool can read them at once, else the pool's cached pass; `None` when the
    /// volume is not there (or is not the file shelf made).
    pub(super) async fn share_allocated(
        &self,
        pool: &Arc<dyn Pool>,
        id: &str,
    ) -> Result<Option<u64>> {
        // From the kernel's caches when they hold it (no hand-over to the blocking pool,
        // whose wake-ups cost a `share.show` more than its work), else off the loop.
        let figure = match pool.volume_allocated_cached(id) {
            Some(now) => now?,
            None => {
                let (p, sid) = (pool.clone(), id.to_string());
                blocking(move || p.volume_allocated(&sid)).await?
            }
        };
        if let Some(bytes) = figure {
            return Ok(Some(bytes));
        }
        Ok(self
            .pool_allocation(pool)
            .await
            .and_then(|a| a.shares.get(id).copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stale figure is answered as it is, and only the first request to find it stale
    /// starts a pass; a failed pass leaves no figure, and the next stale request retries.
    #[test]
    fn stale_figures_are_served_and_one_refresh_starts() {
        let slot = Slot::default();
        assert!(
            slot.cached().is_none(),
            "no pass yet: the first request waits"
        );
        let figures = Arc::new(Allocation {
            total: 7,
            ..Allocation::default()
        });
        slot.store(Some(figures.clone()));
        let (got, refresh) = slot.cached().unwrap();
        assert_eq!(got.unwrap().total, 7);
        assert!(!refresh, "fresh figures start no pass");
        slot.last.lock().unwrap().figures = Some((Instant::now() - MAX_AGE, Some(figures)));
        let (got, refresh) = slot.cached().unwrap();
        assert_eq!(
            got.unwrap().total,
            7,
            "the stale figure is answered at once"
        );
        assert!(refresh, "and the request starts a pass");
        let (_, again) = slot.cached().unwrap();
        assert!(!again, "a pass is running: no second one");
        slot.store(None);
        let (got, _) = slot.cached().unwrap();
        assert!(got.is_none(), "a failed pass leaves no figure");
    }
}
