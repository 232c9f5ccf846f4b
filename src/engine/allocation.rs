//! Allocation figures for `pool.show`/`pool.list` and `share.show`: what volumes really
//! take, beside what was promised (`provisioned`, `size`).
//!
//! A file pool's figure costs a stat of every volume and snapshot, an LVM pool's one `lvs`:
//! too much for every request. So each pool's last pass is cached for at most
//! [`MAX_AGE`]; a request that finds it older makes one new pass off the event loop while
//! any others asking for the same pool wait for that pass rather than starting their own.
//! At most one pass per pool per [`MAX_AGE`], however many clients ask. `share.show` of a
//! file pool's share stats that one file instead (O(1), always current).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{blocking, Engine};
use crate::error::Result;
use crate::pool::{Allocation, Pool};

/// How old a pool's cached allocation may be when it is answered.
pub const MAX_AGE: Duration = Duration::from_secs(5);

type Slot = Arc<async_lock::Mutex<Option<(Instant, Arc<Allocation>)>>>;

/// Each pool's last allocation pass and when it was made.
#[derive(Debug, Default)]
pub(super) struct AllocationCache {
    slots: Mutex<BTreeMap<String, Slot>>,
}

impl AllocationCache {
    fn slot(&self, pool: &str) -> Slot {
        self.slots
            .lock()
            .expect("allocation cache")
            .entry(pool.to_string())
            .or_default()
            .clone()
    }
}

impl Engine {
    /// `pool`'s allocation, at most [`MAX_AGE`] old.
    pub(super) async fn pool_allocation(&self, pool: &Arc<dyn Pool>) -> Result<Arc<Allocation>> {
        let slot = self.allocations.slot(pool.name());
        let mut held = slot.lock().await;
        if let Some((at, figures)) = held.as_ref() {
            if at.elapsed() < MAX_AGE {
                return Ok(figures.clone());
            }
        }
        let p = pool.clone();
        let figures = Arc::new(blocking(move || p.allocation()).await?);
        *held = Some((Instant::now(), figures.clone()));
        Ok(figures)
    }

    /// The bytes really allocated to share `id`'s volume in `pool`: the file's own blocks
    /// where the pool can read them at once, else the pool's cached pass; `None` when the
    /// volume is not there (or is not the file shelf made).
    pub(super) async fn share_allocated(
        &self,
        pool: &Arc<dyn Pool>,
        id: &str,
    ) -> Result<Option<u64>> {
        let (p, sid) = (pool.clone(), id.to_string());
        if let Some(bytes) = blocking(move || p.volume_allocated(&sid)).await? {
            return Ok(Some(bytes));
        }
        Ok(self.pool_allocation(pool).await?.shares.get(id).copied())
    }
}
