//! Per-object locks: operations on the same object are serialised, others run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_lock::{Mutex as AsyncMutex, MutexGuardArc};

/// A table of async mutexes keyed by object id; entries vanish when nobody holds them.
#[derive(Debug, Default)]
pub struct LockTable {
    table: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct ObjectGuard<'a> {
    table: &'a LockTable,
    key: String,
    guard: Option<MutexGuardArc<()>>,
}

impl LockTable {
    /// Wait for and take the lock on `key`.
    pub async fn lock(&self, key: &str) -> ObjectGuard<'_> {
        let m = {
            let mut t = self.table.lock().expect("lock table poisoned");
            t.entry(key.to_string()).or_default().clone()
        };
        let guard = m.lock_arc().await;
        ObjectGuard {
            table: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// Number of keys with a holder or waiter (for tests and stats).
    pub fn len(&self) -> usize {
        self.table.lock().expect("lock table poisoned").len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ObjectGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut t = self.table.table.lock().expect("lock table poisoned");
        if let Some(m) = t.get(&self.key) {
            // Only the table holds it: nobody is waiting.
            if Arc::strong_count(m) == 1 {
                t.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_serialises_and_entries_are_dropped() {
        let t = LockTable::default();
        smol::block_on(async {
            let g = t.lock("a").await;
            let other = t.lock("b").await;
            assert_eq!(t.len(), 2);
            let waiter = async { t.lock("a").await };
            let raced = futures_lite::future::or(async { Some(waiter.await) }, async {
                smol::Timer::after(std::time::Duration::from_millis(50)).await;
                None
            })
            .await;
            assert!(raced.is_none(), "second lock on the same key must wait");
            drop(g);
            drop(other);
            let _again = t.lock("a").await;
        });
        assert!(t.is_empty());
    }
}
