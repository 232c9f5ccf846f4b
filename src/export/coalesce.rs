//! Group commit for drivers whose whole configuration is one file (exports files, ganesha
//! includes): many changes in a burst cost one write and one reload.
//!
//! Each change updates the desired set and takes a generation number, then waits for a
//! flush that covers it. Flushes run one at a time; the next one to start takes every
//! change made so far, so a burst of N changes costs one or two flushes, not N.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use crate::error::Result;

use super::ExportSpec;

/// The desired set that `specs` make, by export id (what a whole file is written from).
pub fn set_of(specs: &[ExportSpec]) -> BTreeMap<String, ExportSpec> {
    specs
        .iter()
        .map(|s| (s.export.id.clone(), s.clone()))
        .collect()
}

/// The desired exports of one driver, by export id, and the flush bookkeeping.
#[derive(Debug, Default)]
pub struct Coalescer {
    desired: Mutex<(u64, BTreeMap<String, ExportSpec>)>,
    /// Highest generation a successful flush has covered; the lock serialises flushes.
    flushed: async_lock::Mutex<u64>,
}

impl Coalescer {
    /// Record a change and return its generation.
    pub fn change(&self, f: impl FnOnce(&mut BTreeMap<String, ExportSpec>)) -> u64 {
        let mut d = self.desired.lock().expect("coalescer lock");
        f(&mut d.1);
        d.0 += 1;
        d.0
    }

    /// Replace the whole desired set (start-up, reconcile).
    pub fn load(&self, specs: &[ExportSpec]) {
        self.change(|m| *m = set_of(specs));
    }

    /// Add or update one export and wait until a flush covers it.
    pub async fn upsert<F, Fut>(&self, spec: &ExportSpec, flush: F) -> Result<()>
    where
        F: FnOnce(BTreeMap<String, ExportSpec>) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let gen = self.change(|m| {
            m.insert(spec.export.id.clone(), spec.clone());
        });
        self.flush_through(gen, flush).await
    }

    /// Drop one export and wait until a flush covers it.
    pub async fn forget<F, Fut>(&self, spec: &ExportSpec, flush: F) -> Result<()>
    where
        F: FnOnce(BTreeMap<String, ExportSpec>) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let gen = self.change(|m| {
            m.remove(&spec.export.id);
        });
        self.flush_through(gen, flush).await
    }

    /// The desired set now.
    pub fn snapshot(&self) -> (u64, BTreeMap<String, ExportSpec>) {
        let d = self.desired.lock().expect("coalescer lock");
        (d.0, d.1.clone())
    }

    /// Wait until generation `gen` is flushed, flushing (everything pending) if nobody has.
    pub async fn flush_through<F, Fut>(&self, gen: u64, flush: F) -> Result<()>
    where
        F: FnOnce(BTreeMap<String, ExportSpec>) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let mut flushed = self.flushed.lock().await;
        if *flushed >= gen {
            return Ok(());
        }
        let (now, set) = self.snapshot();
        flush(set).await?;
        *flushed = now;
        Ok(())
    }

    /// Flush everything now, whether or not it changed (reconcile, start-up).
    pub async fn flush_all<F, Fut>(&self, flush: F) -> Result<()>
    where
        F: FnOnce(BTreeMap<String, ExportSpec>) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let mut flushed = self.flushed.lock().await;
        let (now, set) = self.snapshot();
        flush(set).await?;
        *flushed = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_burst_costs_few_flushes() {
        let c = Arc::new(Coalescer::default());
        let flushes = Arc::new(AtomicUsize::new(0));
        smol::block_on(async {
            let mut tasks = Vec::new();
            for i in 0..200 {
                let (c, flushes) = (c.clone(), flushes.clone());
                tasks.push(smol::spawn(async move {
                    let gen = c.change(|_| {});
                    c.flush_through(gen, |_| async {
                        flushes.fetch_add(1, Ordering::SeqCst);
                        smol::Timer::after(std::time::Duration::from_millis(5)).await;
                        Ok(())
                    })
                    .await
                    .unwrap();
                    i
                }));
            }
            for t in tasks {
                t.await;
            }
        });
        let n = flushes.load(Ordering::SeqCst);
        assert!(n < 20, "200 changes cost {n} flushes");
    }
}
