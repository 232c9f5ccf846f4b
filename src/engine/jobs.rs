//! Long-running work as jobs.
//!
//! A job starts at once and runs on its own task; `job.show`/`job.list` report its state
//! and progress, `job.cancel` asks it to stop at its next check. Its start and end are
//! written to the job log in the database; a restart marks jobs it interrupted `failed`
//! (recovery removes what they left). Its progress and end go out on the event bus
//! ([`super::events`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciborium::Value;

use crate::error::{Error, Result};
use crate::store::{self, JobRow, Store};

pub use super::events::{Event, EventBus, Subscription, EVENT_BACKLOG, SUBSCRIBER_QUEUE};

/// A running or finished job.
#[derive(Debug)]
pub struct JobHandle {
    row: Mutex<JobRow>,
    cancel: AtomicBool,
    done: AtomicU64,
    total: AtomicU64,
}

/// What a job's work sees: progress reporting and cancellation.
#[derive(Debug, Clone)]
pub struct JobCtx {
    handle: Arc<JobHandle>,
    bus: Arc<EventBus>,
    id: String,
    op: String,
    last: Arc<Mutex<(Instant, u64)>>,
}

impl JobCtx {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Set the total amount of work.
    pub fn set_total(&self, total: u64) {
        self.handle.total.store(total, Ordering::Relaxed);
    }

    /// Counters a blocking closure can update directly: (done, cancelled).
    pub fn counters(&self) -> Arc<JobHandle> {
        self.handle.clone()
    }

    /// Report progress; publishes an event at most every 250 ms or 5 % of the total.
    pub fn progress(&self, done: u64) {
        self.handle.done.store(done, Ordering::Relaxed);
        self.maybe_publish();
    }

    fn maybe_publish(&self) {
        let done = self.handle.done.load(Ordering::Relaxed);
        let total = self.handle.total.load(Ordering::Relaxed);
        let mut last = self.last.lock().expect("job progress");
        let step = (total / 20).max(1);
        if last.0.elapsed() >= Duration::from_millis(250) || done >= last.1 + step {
            *last = (Instant::now(), done);
            drop(last);
            self.bus
                .publish("job.progress", &self.op, &self.id, Some((done, total)));
        }
    }

    /// Whether `job.cancel` asked the job to stop.
    pub fn cancelled(&self) -> bool {
        self.handle.cancel.load(Ordering::Relaxed)
    }

    /// `Err(busy...)` if cancelled, for `?` at the job's checkpoints.
    pub fn checkpoint(&self) -> Result<()> {
        if self.cancelled() {
            Err(Error::Busy(format!("job {} was cancelled", self.id)))
        } else {
            Ok(())
        }
    }

    /// Resolves when the job is cancelled (polls every 100 ms; for racing a command).
    pub async fn cancellation(&self) {
        while !self.cancelled() {
            smol::Timer::after(Duration::from_millis(100)).await;
            self.maybe_publish();
        }
    }
}

impl JobHandle {
    /// Add to the amount done (from a blocking closure).
    pub fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether cancellation was asked for (from a blocking closure).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> JobRow {
        let mut r = self.row.lock().expect("job row").clone();
        if r.state == "running" {
            r.done = self.done.load(Ordering::Relaxed);
            r.total = self.total.load(Ordering::Relaxed);
        }
        r
    }
}

/// The jobs of this run of shelfd (older ones are in the job log).
#[derive(Debug, Default)]
pub struct Jobs {
    map: Mutex<BTreeMap<String, Arc<JobHandle>>>,
}

/// A job as `job.show` and `job.list` return it.
pub fn job_value(r: &JobRow) -> Value {
    let result = r
        .result
        .as_ref()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .map(|j| crate::client::from_json(&j))
        .unwrap_or(Value::Null);
    let error = match (&r.error_code, &r.error_message) {
        (Some(c), m) => super::map(vec![
            ("code", Value::Text(c.clone())),
            ("message", Value::Text(m.clone().unwrap_or_default())),
        ]),
        _ => Value::Null,
    };
    super::map(vec![
        ("id", Value::Text(r.id.clone())),
        ("op", Value::Text(r.op.clone())),
        ("target", Value::Text(r.target.clone())),
        ("state", Value::Text(r.state.clone())),
        ("done", Value::Integer(r.done.into())),
        ("total", Value::Integer(r.total.into())),
        ("result", result),
        ("error", error),
        ("created_at", Value::Integer(r.created_at.into())),
        (
            "finished_at",
            r.finished_at
                .map(|t| Value::Integer(t.into()))
                .unwrap_or(Value::Null),
        ),
    ])
}

impl Jobs {
    /// Start `work` as a job; returns its id at once.
    pub async fn start<F, Fut>(
        &self,
        store: &Store,
        bus: &Arc<EventBus>,
        op: &str,
        target: &str,
        work: F,
    ) -> Result<String>
    where
        F: FnOnce(JobCtx) -> Fut,
        Fut: Future<Output = Result<Value>> + Send + 'static,
    {
        let id = uuid::Uuid::new_v4().to_string();
        let row = JobRow {
            id: id.clone(),
            op: op.to_string(),
            target: target.to_string(),
            state: "running".into(),
            done: 0,
            total: 0,
            result: None,
            error_code: None,
            error_message: None,
            created_at: store::now(),
            finished_at: None,
        };
        let r = row.clone();
        store.write(move |c| store::put_job(c, &r)).await?;
        let handle = Arc::new(JobHandle {
            row: Mutex::new(row),
            cancel: AtomicBool::new(false),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        });
        self.map
            .lock()
            .expect("jobs")
            .insert(id.clone(), handle.clone());
        let ctx = JobCtx {
            handle: handle.clone(),
            bus: bus.clone(),
            id: id.clone(),
            op: op.to_string(),
            last: Arc::new(Mutex::new((Instant::now(), 0))),
        };
        let fut = work(ctx);
        let (store, bus, op) = (store.clone(), bus.clone(), op.to_string());
        smol::spawn(async move {
            let outcome = fut.await;
            let mut row = handle.snapshot();
            row.finished_at = Some(store::now());
            let kind = match &outcome {
                Ok(v) => {
                    row.state = "done".into();
                    row.done = row.total.max(row.done);
                    row.result = serde_json::to_string(&crate::client::to_json(v)).ok();
                    "job.done"
                }
                Err(e) => {
                    let cancelled = handle.is_cancelled();
                    row.state = if cancelled { "cancelled" } else { "failed" }.into();
                    row.error_code = Some(e.code().as_str().into());
                    row.error_message = Some(e.to_string());
                    if cancelled {
                        "job.cancelled"
                    } else {
                        "job.failed"
                    }
                }
            };
            *handle.row.lock().expect("job row") = row.clone();
            let id = row.id.clone();
            if let Err(e) = store.write(move |c| store::put_job(c, &row)).await {
                log::error!("job {id}: cannot record its end: {e}");
            }
            match &outcome {
                Ok(_) => log::info!("job {id} ({op}) done"),
                Err(e) => log::warn!("job {id} ({op}): {e}"),
            }
            bus.publish(kind, &op, &id, None);
        })
        .detach();
        Ok(id)
    }

    /// A job of this run, or from the log.
    pub async fn show(&self, store: &Store, id: &str) -> Result<JobRow> {
        if let Some(h) = self.map.lock().expect("jobs").get(id) {
            return Ok(h.snapshot());
        }
        let id = id.to_string();
        store
            .call(move |c| {
                store::list_jobs(c)?
                    .into_iter()
                    .find(|j| j.id == id)
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "no job {:?}",
                            id.chars().take(64).collect::<String>()
                        ))
                    })
            })
            .await
    }

    /// Every job in the log (newest first), with live progress for running ones.
    pub async fn list(&self, store: &Store) -> Result<Vec<JobRow>> {
        let mut rows = store.call(|c| store::list_jobs(c)).await?;
        let map = self.map.lock().expect("jobs");
        for r in &mut rows {
            if let Some(h) = map.get(&r.id) {
                *r = h.snapshot();
            }
        }
        Ok(rows)
    }

    /// Ask a running job to stop. `changed: false` when it had already ended.
    pub fn cancel(&self, id: &str) -> Result<bool> {
        let map = self.map.lock().expect("jobs");
        let h = map.get(id).ok_or_else(|| {
            Error::NotFound(format!(
                "no running job {:?}",
                id.chars().take(64).collect::<String>()
            ))
        })?;
        if h.row.lock().expect("job row").state != "running" {
            return Ok(false);
        }
        h.cancel.store(true, Ordering::Relaxed);
        Ok(true)
    }
}
