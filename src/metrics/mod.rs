//! Prometheus metrics: what shelfd exposes, how it is written, and where it goes.
//!
//! * [`registry`] — the counters the server keeps as it runs (requests with their latency,
//!   connections, refusals, reconciles). The server calls them with one line each:
//!   [`request`] where a request's op, outcome and duration are known, [`connection`] when
//!   a connection is admitted, [`refused`] when one is refused, [`reconciled`] after a
//!   reconciliation.
//! * [`collect`] — one exposition: those counters, and the engine's figures read when
//!   scraped (pools, the tree's counts, jobs, intents, the audit backlog).
//! * [`render`] — the text exposition format 0.0.4.
//! * [`http`] — the opt-in listener (`[metrics] listen`), [`textfile`] — the opt-in file
//!   for node_exporter (`[metrics] textfile`).
//!
//! Both are off by default; docs/metrics.md lists every metric.

pub mod collect;
pub mod histogram;
pub mod http;
pub mod linger;
pub mod registry;
pub mod render;
pub mod textfile;

use std::sync::Arc;
use std::time::Duration;

pub use registry::{registry, OpenConnection, Registry};

use crate::config::MetricsConfig;
use crate::engine::Engine;
use crate::export::Finding;

/// Count a request: its wire op, its outcome (`ok` or the error's code) and how long it
/// took. A refused one (`permission_denied`) is also counted a refusal (`role`).
pub fn request<T>(op: &str, result: &crate::error::Result<T>, took: Duration) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    };
    if outcome == "permission_denied" {
        registry().refuse("role");
    }
    registry().observe_request(op, outcome, took);
}

/// The op label of requests the connection answers itself, before they reach dispatch (a
/// frame that is not a request, bad arguments, an unknown op): never the peer's op
/// string, so the label set stays bounded whatever peers send.
pub const UNPARSED_OP: &str = "unknown";

/// Count a request the connection answered itself with `code` (`took` since its frame was
/// read) under op [`UNPARSED_OP`], and as a refusal: `unknown_op` for an op shelfd does
/// not have, `bad_request` for anything else.
pub fn rejected(code: crate::proto::ErrorCode, took: Duration) {
    let reason = match code {
        crate::proto::ErrorCode::Unsupported => "unknown_op",
        _ => "bad_request",
    };
    registry().refuse(reason);
    registry().observe_request(UNPARSED_OP, code.as_str(), took);
}

/// Count an answer given outside the engine's requests (`events.subscribe`): its op, its
/// outcome (`Ok` or the code it was answered with) and how long it took.
pub fn answered(op: &str, outcome: Result<(), crate::proto::ErrorCode>, took: Duration) {
    let outcome = outcome.map_or_else(|c| c.as_str(), |()| "ok");
    registry().observe_request(op, outcome, took);
}

/// Count a connection admitted with `role`; keep the guard for as long as it is open.
pub fn connection(role: &'static str) -> OpenConnection {
    registry().open_connection(role)
}

/// Count a refusal (`no_role`, `max_connections`, `max_connections_per_uid`, ...).
pub fn refused(reason: &'static str) {
    registry().refuse(reason);
}

/// The refusal reason of a frame that broke the framing, by the code it is answered with:
/// `request_buffer` (the buffer budget was spent), else `bad_frame` (too large, too slow).
pub fn frame_reason(code: crate::proto::ErrorCode) -> &'static str {
    match code {
        crate::proto::ErrorCode::Busy => "request_buffer",
        _ => "bad_frame",
    }
}

/// Count a reconciliation and its findings.
pub fn reconciled(findings: &[Finding]) {
    registry().reconciled(findings);
}

/// The listener and textfile writer, running.
#[derive(Debug)]
pub struct Running {
    tasks: Vec<smol::Task<()>>,
}

impl Running {
    /// Wait for them to end (they end when the `stop` given to [`start`] closes).
    pub async fn finish(self) {
        for t in self.tasks {
            t.await;
        }
    }
}

/// Bind the listener and start the textfile writer that `config` asks for (nothing when
/// it asks for neither). A listener that cannot be bound is an error: the operator asked
/// for it.
pub fn start(
    config: &MetricsConfig,
    engine: Arc<Engine>,
    stop: smol::channel::Receiver<()>,
) -> Result<Running, String> {
    let min_interval = Duration::from_secs(config.min_interval);
    let collector = Arc::new(collect::Collector::new(engine, min_interval));
    let mut tasks = Vec::new();
    if let Some(at) = config.listener() {
        let listener = http::Listener::bind(&at)?;
        log::info!("metrics on {}", listener.describe());
        let (c, cfg, stop) = (collector.clone(), config.clone(), stop.clone());
        tasks.push(smol::spawn(async move {
            http::serve(listener, c, &cfg, stop).await;
        }));
    }
    if let Some(path) = config.textfile() {
        log::info!(
            "metrics written to {} every {} s",
            path.display(),
            config.textfile_interval
        );
        let every = Duration::from_secs(config.textfile_interval);
        tasks.push(smol::spawn(textfile::write_every(
            path.to_path_buf(),
            every,
            collector,
            stop,
        )));
    }
    Ok(Running { tasks })
}
