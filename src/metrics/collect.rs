//! One exposition: the engine's figures ([`Gauges`], read when scraped) and the process's
//! counters ([`Registry`]), each family with its HELP and TYPE. docs/metrics.md lists
//! them; a new one goes in both places.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::Registry;
use super::render::{Kind, Text};
use crate::engine::{Engine, Gauges};
use crate::model::Pool as PoolInfo;

/// Collects expositions for the listener and the textfile, one at a time, and reuses the
/// last one for `min_interval` after its collection ended: a collection walks the database
/// on its one thread, lists the jobs and reads every pool's usage, so however often a
/// scraper asks, at most one collection starts per `min_interval` and the database thread
/// is left to the writes in between. Scrapes that arrive while one is being collected wait
/// and share it or the next, so a burst never costs more than two.
#[derive(Debug)]
pub struct Collector {
    engine: Arc<Engine>,
    /// How long an exposition is reused after its collection ended.
    min_interval: Duration,
    /// Scrapes that have asked so far (each takes the next number).
    arrivals: AtomicU64,
    /// The last exposition.
    last: async_lock::Mutex<Option<Last>>,
}

/// The last exposition, the arrivals it answers (those numbered up to it) and when its
/// collection ended.
#[derive(Debug)]
struct Last {
    answers: u64,
    ended: Instant,
    text: Arc<str>,
}

/// Whether scrape number `me` may be answered with `last` at `now`: it arrived while
/// `last` was being collected, or `last` is younger than `min_interval`.
fn reusable(last: &Last, me: u64, now: Instant, min_interval: Duration) -> bool {
    last.answers >= me || now.saturating_duration_since(last.ended) < min_interval
}

impl Collector {
    /// A collector over the engine that reuses an exposition for `min_interval`.
    pub fn new(engine: Arc<Engine>, min_interval: Duration) -> Self {
        Collector {
            engine,
            min_interval,
            arrivals: AtomicU64::new(0),
            last: async_lock::Mutex::new(None),
        }
    }

    /// An exposition collected after this call began, or less than `min_interval` ago.
    pub async fn text(&self) -> Arc<str> {
        let me = self.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = self.last.lock().await;
        if let Some(l) = &*last {
            if reusable(l, me, Instant::now(), self.min_interval) {
                return l.text.clone();
            }
        }
        // Every scrape that has arrived by now is answered by this collection.
        let answers = self.arrivals.load(Ordering::SeqCst);
        super::registry().collected();
        let t0 = Instant::now();
        let gauges = self.engine.gauges().await;
        if let Err(e) = &gauges {
            log::warn!("metrics: cannot read the engine's figures: {e}");
        }
        let text: Arc<str> = render(gauges.ok().as_ref(), super::registry(), t0.elapsed()).into();
        *last = Some(Last {
            answers,
            ended: Instant::now(),
            text: text.clone(),
        });
        text
    }
}

/// Write the whole exposition. `gauges` is `None` when the engine's figures could not be
/// read (the database failed): the process's counters are still reported.
pub fn render(gauges: Option<&Gauges>, reg: &Registry, took: Duration) -> String {
    let mut t = Text::default();
    t.family(
        "shelf_build_info",
        Kind::Gauge,
        "shelfd's version (always 1).",
    );
    t.sample(
        "shelf_build_info",
        &[("server", crate::SERVER_NAME), ("version", crate::VERSION)],
        1u64,
    );
    if let Some(g) = gauges {
        pools(&mut t, g);
        tree(&mut t, g);
        work(&mut t, g);
    }
    counters(&mut t, reg);
    t.family(
        "shelf_collect_success",
        Kind::Gauge,
        "1 if the engine's figures (pools, tree, jobs, audit) were read for this exposition.",
    );
    t.sample("shelf_collect_success", &[], u64::from(gauges.is_some()));
    t.family(
        "shelf_collect_duration_seconds",
        Kind::Gauge,
        "Seconds the engine's figures took to read for this exposition.",
    );
    t.sample("shelf_collect_duration_seconds", &[], took.as_secs_f64());
    t.finish()
}

/// A gauge family with one sample per pool.
fn per_pool(t: &mut Text, g: &Gauges, name: &str, help: &str, f: impl Fn(&PoolInfo) -> f64) {
    t.family(name, Kind::Gauge, help);
    for p in &g.pools {
        t.sample(name, &[("pool", &p.name)], f(p));
    }
}

fn pools(t: &mut Text, g: &Gauges) {
    t.family(
        "shelf_pool_info",
        Kind::Gauge,
        "A configured pool (always 1): its kind and whether it clones instantly.",
    );
    for p in &g.pools {
        let reflink = if p.reflink { "true" } else { "false" };
        let labels = [
            ("pool", p.name.as_str()),
            ("kind", p.kind.as_str()),
            ("reflink", reflink),
        ];
        t.sample("shelf_pool_info", &labels, 1u64);
    }
    t.family(
        "shelf_pool_readable",
        Kind::Gauge,
        "1 if the pool's usage could be read for this exposition, 0 if not (see the log).",
    );
    for p in &g.pools {
        t.sample("shelf_pool_readable", &[("pool", &p.name)], 1u64);
    }
    for (name, _) in &g.unreadable {
        t.sample("shelf_pool_readable", &[("pool", name)], 0u64);
    }
    type Figure = fn(&PoolInfo) -> Option<u64>;
    let bytes: [(&str, &str, Figure); 8] = [
        ("shelf_pool_size_bytes", "Size of the pool's storage.", |p| Some(p.size)),
        ("shelf_pool_used_bytes", "Bytes used on the pool's storage.", |p| Some(p.used)),
        ("shelf_pool_free_bytes", "Bytes free on the pool's storage.", |p| Some(p.free)),
        (
            "shelf_pool_provisioned_bytes",
            "Sum of the sizes of the pool's shares (what they may grow to).",
            |p| Some(p.provisioned),
        ),
        (
            "shelf_pool_allocated_bytes",
            "Bytes the pool's volumes and snapshots really take (pool.show allocated; a few seconds old at most; absent while the pool's allocation pass fails).",
            |p| p.allocated,
        ),
        (
            "shelf_pool_reserved_bytes",
            "Bytes of the pool kept back from provisioning (reserved_percentage).",
            |p| Some(p.reserved),
        ),
        (
            "shelf_pool_provisioning_limit_bytes",
            "Most the pool's shares may be provisioned in all (size less reserve, times max_over_subscription_ratio).",
            |p| Some(p.provisioning_limit),
        ),
        (
            "shelf_pool_available_to_provision_bytes",
            "Provisioning limit less what is provisioned.",
            |p| Some(p.available_to_provision),
        ),
    ];
    for (name, help, f) in bytes {
        t.family(name, Kind::Gauge, help);
        // A figure the pool could not give this time (allocated, when its pass failed)
        // is left out rather than reported as 0.
        for p in &g.pools {
            if let Some(v) = f(p) {
                t.sample(name, &[("pool", &p.name)], v);
            }
        }
    }
    per_pool(
        t,
        g,
        "shelf_pool_max_over_subscription_ratio",
        "How far the pool's shares may together exceed its size.",
        |p| p.max_over_subscription_ratio,
    );
}

fn tree(t: &mut Text, g: &Gauges) {
    let c = &g.counts;
    t.family("shelf_shares", Kind::Gauge, "Shares by pool and state.");
    for (pool, state, n) in &c.shares {
        t.sample("shelf_shares", &[("pool", pool), ("state", state)], *n);
    }
    t.family(
        "shelf_snapshots",
        Kind::Gauge,
        "Snapshots by pool and state.",
    );
    for (pool, state, n) in &c.snapshots {
        t.sample("shelf_snapshots", &[("pool", pool), ("state", state)], *n);
    }
    t.family(
        "shelf_exports",
        Kind::Gauge,
        "Exports by driver, protocol and state.",
    );
    for (driver, protocol, state, n) in &c.exports {
        let labels = [
            ("driver", driver.as_str()),
            ("protocol", protocol),
            ("state", state),
        ];
        t.sample("shelf_exports", &labels, *n);
    }
    t.family(
        "shelf_attachments",
        Kind::Gauge,
        "Attached clients by the driver of their export and protocol.",
    );
    for (driver, protocol, n) in &c.attachments {
        let labels = [("driver", driver.as_str()), ("protocol", protocol)];
        t.sample("shelf_attachments", &labels, *n);
    }
    t.family(
        "shelf_driver_usable",
        Kind::Gauge,
        "1 if the export driver's last background probe found it usable, 0 if not.",
    );
    for (driver, usable) in &g.drivers {
        t.sample(
            "shelf_driver_usable",
            &[("driver", driver)],
            u64::from(*usable),
        );
    }
}

fn work(t: &mut Text, g: &Gauges) {
    t.family(
        "shelf_intents_pending",
        Kind::Gauge,
        "Journalled steps not yet finished, by op (recovery finishes them after a crash).",
    );
    for (op, n) in &g.counts.intents {
        t.sample("shelf_intents_pending", &[("op", op)], *n);
    }
    t.family(
        "shelf_jobs",
        Kind::Gauge,
        "Jobs in the job log (its newest 1000) by op and state.",
    );
    for ((op, state), f) in &g.jobs {
        t.sample("shelf_jobs", &[("op", op), ("state", state)], f.jobs);
    }
    t.family(
        "shelf_job_done_bytes",
        Kind::Gauge,
        "Bytes done by the jobs of shelf_jobs, by op and state (live for running jobs).",
    );
    for ((op, state), f) in &g.jobs {
        t.sample(
            "shelf_job_done_bytes",
            &[("op", op), ("state", state)],
            f.done_bytes,
        );
    }
    t.family(
        "shelf_audit_backlog_entries",
        Kind::Gauge,
        "Audit entries queued for the database and not yet written.",
    );
    t.sample("shelf_audit_backlog_entries", &[], g.audit_backlog);
    t.family(
        "shelf_audit_unwritten_entries_total",
        Kind::Counter,
        "Audit entries this process could not write (the database failed or was closed).",
    );
    t.sample(
        "shelf_audit_unwritten_entries_total",
        &[],
        g.audit_unwritten,
    );
}

fn counters(t: &mut Text, reg: &Registry) {
    let name = "shelf_request_duration_seconds";
    t.family(
        name,
        Kind::Histogram,
        "Requests by op and outcome (ok or the error code) and the seconds each took to answer; _count is the number of requests.",
    );
    for ((op, outcome), h) in reg.requests() {
        t.histogram(name, &[("op", &op), ("outcome", outcome)], &h);
    }
    let conns = reg.connections();
    t.family(
        "shelf_connections_open",
        Kind::Gauge,
        "Connections to the management socket open now, by role.",
    );
    for (role, open, _) in &conns {
        t.sample("shelf_connections_open", &[("role", role)], *open);
    }
    t.family(
        "shelf_connections_total",
        Kind::Counter,
        "Connections to the management socket admitted since start, by role.",
    );
    for (role, _, total) in &conns {
        t.sample("shelf_connections_total", &[("role", role)], *total);
    }
    t.family(
        "shelf_refusals_total",
        Kind::Counter,
        "Connections and requests refused since start, by reason.",
    );
    for (reason, n) in reg.refusals() {
        t.sample("shelf_refusals_total", &[("reason", reason)], n);
    }
    let r = reg.reconciles();
    t.family(
        "shelf_reconciles_total",
        Kind::Counter,
        "Reconciliations of exports with the target daemons since start.",
    );
    t.sample("shelf_reconciles_total", &[], r.runs);
    t.family(
        "shelf_reconcile_findings_total",
        Kind::Counter,
        "Differences reconciliations found since start, by driver and kind.",
    );
    for ((driver, kind), n) in &r.findings {
        let labels = [("driver", driver.as_str()), ("kind", kind)];
        t.sample("shelf_reconcile_findings_total", &labels, *n);
    }
    t.family(
        "shelf_reconcile_last_timestamp_seconds",
        Kind::Gauge,
        "When the last reconciliation ended (Unix time; 0: none since start).",
    );
    t.sample("shelf_reconcile_last_timestamp_seconds", &[], r.last_at);
    t.family(
        "shelf_metrics_collections_total",
        Kind::Counter,
        "Expositions collected since start (each reads the engine's figures; scrapes within metrics.min_interval reuse the last).",
    );
    t.sample("shelf_metrics_collections_total", &[], reg.collections());
    t.family(
        "shelf_metrics_http_replies_total",
        Kind::Counter,
        "Replies of the metrics listener since start, by HTTP status.",
    );
    for (code, n) in reg.http_replies() {
        t.sample(
            "shelf_metrics_http_replies_total",
            &[("code", &code.to_string())],
            n,
        );
    }
}

#[cfg(test)]
#[path = "collect_tests.rs"]
mod tests;
