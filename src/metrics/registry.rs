//! The counters shelfd keeps as it runs: requests, connections, refusals, reconciles and
//! the metrics listener's own replies. One per process, so the server's hooks are single
//! calls; label sets are bounded (ops and error codes are fixed sets, and a cap stops a
//! label that could grow).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use super::histogram::{Histogram, Snapshot};
use crate::export::Finding;

/// Distinct (op, outcome) series at most; later ones are counted under op `other`.
const MAX_REQUEST_SERIES: usize = 1024;
/// Distinct labels of the smaller maps at most (refusal reasons, finding kinds).
const MAX_SMALL_SERIES: usize = 256;

/// Connections of one role.
#[derive(Debug, Default)]
struct ConnCounts {
    open: AtomicI64,
    total: AtomicU64,
}

/// What reconciliations found, since start.
#[derive(Debug, Default, Clone)]
pub struct ReconcileCounts {
    /// Reconciliations run.
    pub runs: u64,
    /// Findings by (driver, kind).
    pub findings: BTreeMap<(String, String), u64>,
    /// When the last one ended (Unix seconds; 0: none yet).
    pub last_at: f64,
}

/// The process's counters.
#[derive(Debug, Default)]
pub struct Registry {
    requests: RwLock<BTreeMap<(String, &'static str), Arc<Histogram>>>,
    connections: RwLock<BTreeMap<&'static str, Arc<ConnCounts>>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    reconcile: Mutex<ReconcileCounts>,
    http: Mutex<BTreeMap<u16, u64>>,
    collections: AtomicU64,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The process's registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// Open connections of a role; closing it (dropping this) counts the connection closed.
#[derive(Debug)]
pub struct OpenConnection(Arc<ConnCounts>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut m = map.lock().expect("metrics map");
    if m.len() < MAX_SMALL_SERIES || m.contains_key(&key) {
        *m.entry(key).or_insert(0) += 1;
    }
}

impl Registry {
    /// Count a request that took `took` and ended with `outcome` (`ok` or its error code).
    pub fn observe_request(&self, op: &str, outcome: &'static str, took: Duration) {
        let key = (op.to_string(), outcome);
        let found = self
            .requests
            .read()
            .expect("metrics requests")
            .get(&key)
            .cloned();
        let h = match found {
            Some(h) => h,
            None => {
                let mut w = self.requests.write().expect("metrics requests");
                let key = if w.len() < MAX_REQUEST_SERIES || w.contains_key(&key) {
                    key
                } else {
                    ("other".to_string(), outcome)
                };
                w.entry(key).or_default().clone()
            }
        };
        h.observe(took);
    }

    /// Count a connection admitted with `role`; the guard counts it closed.
    pub fn open_connection(&self, role: &'static str) -> OpenConnection {
        let found = self
            .connections
            .read()
            .expect("metrics connections")
            .get(role)
            .cloned();
        let c = found.unwrap_or_else(|| {
            let mut w = self.connections.write().expect("metrics connections");
            w.entry(role).or_default().clone()
        });
        c.open.fetch_add(1, Ordering::Relaxed);
        c.total.fetch_add(1, Ordering::Relaxed);
        OpenConnection(c)
    }

    /// Count a refusal.
    pub fn refuse(&self, reason: &'static str) {
        bump(&self.refusals, reason);
    }

    /// Count a reconciliation and its findings.
    pub fn reconciled(&self, findings: &[Finding]) {
        let mut r = self.reconcile.lock().expect("metrics reconcile");
        r.runs += 1;
        for f in findings {
            let key = (f.driver.clone(), f.kind.clone());
            if r.findings.len() < MAX_SMALL_SERIES || r.findings.contains_key(&key) {
                *r.findings.entry(key).or_insert(0) += 1;
            }
        }
        r.last_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
    }

    /// Count a reply of the metrics listener by its status.
    pub fn http_reply(&self, status: u16) {
        bump(&self.http, status);
    }

    /// Count a collection of the engine's figures for an exposition.
    pub fn collected(&self) {
        self.collections.fetch_add(1, Ordering::Relaxed);
    }

    /// Collections since start.
    pub fn collections(&self) -> u64 {
        self.collections.load(Ordering::Relaxed)
    }

    /// Every request series: (op, outcome) and its histogram.
    pub fn requests(&self) -> Vec<((String, &'static str), Snapshot)> {
        let r = self.requests.read().expect("metrics requests");
        r.iter().map(|(k, h)| (k.clone(), h.snapshot())).collect()
    }

    /// Connections by role: (role, open now, admitted since start).
    pub fn connections(&self) -> Vec<(&'static str, u64, u64)> {
        let r = self.connections.read().expect("metrics connections");
        r.iter()
            .map(|(role, c)| {
                let open = c.open.load(Ordering::Relaxed).max(0) as u64;
                (*role, open, c.total.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Refusals by reason.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals.lock().expect("metrics map").clone()
    }

    /// Reconciliations so far.
    pub fn reconciles(&self) -> ReconcileCounts {
        self.reconcile.lock().expect("metrics reconcile").clone()
    }

    /// The metrics listener's replies by status.
    pub fn http_replies(&self) -> BTreeMap<u16, u64> {
        self.http.lock().expect("metrics map").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_count_open_and_total() {
        let r = Registry::default();
        let a = r.open_connection("admin");
        let b = r.open_connection("admin");
        drop(a);
        let _c = r.open_connection("reader");
        assert_eq!(r.connections(), vec![("admin", 1, 2), ("reader", 1, 1)]);
        drop(b);
        assert_eq!(r.connections()[0], ("admin", 0, 2));
    }

    #[test]
    fn request_series_are_bounded() {
        let r = Registry::default();
        for i in 0..MAX_REQUEST_SERIES + 10 {
            r.observe_request(&format!("op{i}"), "ok", Duration::from_millis(1));
        }
        let series = r.requests();
        assert_eq!(series.len(), MAX_REQUEST_SERIES + 1);
        let other = series.iter().find(|(k, _)| k.0 == "other").unwrap();
        assert_eq!(other.1.count(), 10);
    }
}
