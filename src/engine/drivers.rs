//! The export drivers' status that `hello` and `pool.show` report, from a cache.
//!
//! Probing a driver runs a command (`tgtadm`, `targetcli`, `exportfs`...). Answering
//! `hello` by probing let any reader make shelfd spawn commands at will, and a flood of
//! `hello`s slowed every attach. So requests only read the cache; it is refreshed in the
//! background (`limits.driver_probe_interval`, each probe under a timeout) and by every
//! operation that probes a driver anyway before using it (export, attach).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ciborium::Value;

use super::Engine;
use crate::error::Result;
use crate::model::Driver;

/// Each driver's last probe: `"usable"` or the reason it is not, and when.
#[derive(Debug, Default)]
pub(super) struct DriverCache {
    entries: Mutex<BTreeMap<Driver, (String, Instant)>>,
}

impl DriverCache {
    fn record(&self, d: Driver, status: String) {
        self.entries
            .lock()
            .expect("driver cache")
            .insert(d, (status, Instant::now()));
    }
}

impl Engine {
    /// Probe a driver before using it, and remember the outcome for `hello`.
    pub(super) async fn probe_driver(&self, d: Driver) -> Result<()> {
        let r = self.exporter(d).probe().await;
        self.driver_cache.record(
            d,
            match &r {
                Ok(()) => "usable".to_string(),
                Err(e) => e.to_string(),
            },
        );
        r
    }

    /// Probe every driver, each within `timeout`, and cache the outcomes (the background
    /// refresh; also run once before the socket opens).
    pub async fn refresh_driver_status(&self, timeout: Duration) {
        for d in self.exporters.keys().copied().collect::<Vec<_>>() {
            let answered = futures_lite::future::or(
                async {
                    let _ = self.probe_driver(d).await;
                    true
                },
                async {
                    smol::Timer::after(timeout).await;
                    false
                },
            )
            .await;
            if !answered {
                self.driver_cache.record(
                    d,
                    format!(
                        "the {} driver's probe did not answer within {} s",
                        d.as_str(),
                        timeout.as_secs()
                    ),
                );
            }
        }
    }

    /// `(drivers, age)` for hello and pool.show: `{driver: "usable" | reason}` as last
    /// probed, and the age in milliseconds of the oldest probe. Runs no command.
    pub(super) fn driver_status(&self) -> (Value, u64) {
        let g = self.driver_cache.entries.lock().expect("driver cache");
        let mut oldest = Duration::ZERO;
        let pairs = self
            .exporters
            .keys()
            .map(|d| {
                let status = match g.get(d) {
                    Some((s, at)) => {
                        oldest = oldest.max(at.elapsed());
                        s.clone()
                    }
                    None => "not probed yet".to_string(),
                };
                (Value::Text(d.as_str().into()), Value::Text(status))
            })
            .collect();
        (Value::Map(pairs), oldest.as_millis() as u64)
    }

    /// `driver_transports` for hello and pool.show: how each driver that has more than
    /// one way to its daemon reaches it (tgt: `"socket"` or `"tgtadm"`), once chosen.
    pub(super) fn driver_transports(&self) -> Value {
        Value::Map(
            self.exporters
                .iter()
                .filter_map(|(d, x)| {
                    let t = x.transport()?;
                    Some((Value::Text(d.as_str().into()), Value::Text(t.into())))
                })
                .collect(),
        )
    }
}
