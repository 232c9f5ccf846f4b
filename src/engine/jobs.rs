//! Long-running work as jobs, and the event stream.
//!
//! A job starts at once and runs on its own task; `job.show`/`job.list` report its state
//! and progress, `job.cancel` asks it to stop at its next check. Its start and end are
//! written to the job log in the database; a restart marks jobs it interrupted `failed`
//! (recovery removes what they left).
//!
//! Events (a job's progress and end, and each object a request created, changed or
//! deleted) get a sequence number and go to every subscribed connection; the newest
//! [`EVENT_BACKLOG`] stay in memory so a client that reconnects can resume from the last
//! sequence it saw.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciborium::Value;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{self, JobRow, Store};

/// Events kept for clients that resume.
pub const EVENT_BACKLOG: usize = 10_000;
/// Events queued for one subscriber before it is dropped (it then resumes with `since`).
/// The queue grows as events wait and shrinks as they go: an idle subscriber costs a few
/// hundred bytes, not room for this many events.
pub const SUBSCRIBER_QUEUE: usize = 4096;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Sequence number, increasing by one per event within an epoch.
    pub seq: u64,
    /// Changes at every start of shelfd; a `since` from another epoch cannot be resumed.
    pub epoch: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// `job.progress`, `job.done`, `job.failed`, `job.cancelled`, `object.created`,
    /// `object.changed`, `object.deleted`.
    pub kind: String,
    /// The op behind it.
    pub op: String,
    /// The job id, or the object's id (or name when no id is known).
    pub object: String,
    /// Job progress: done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    /// Job progress: total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

#[derive(Debug)]
struct BusInner {
    next: u64,
    ring: VecDeque<Event>,
    subscribers: Vec<smol::channel::Sender<Event>>,
}

/// The event bus.
#[derive(Debug)]
pub struct EventBus {
    epoch: String,
    inner: Mutex<BusInner>,
}

/// A subscription: the backlog to send first, whether events were missed, and the live
/// stream.
#[derive(Debug)]
pub struct Subscription {
    /// The epoch of this run of shelfd.
    pub epoch: String,
    /// Events after `since` still in the backlog.
    pub backlog: Vec<Event>,
    /// `true` when events after `since` are no longer in the backlog (or `since` is from
    /// another epoch): the client must re-read the state it cares about.
    pub gap: bool,
    /// Live events.
    pub live: smol::channel::Receiver<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            epoch: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            inner: Mutex::new(BusInner {
                next: 1,
                ring: VecDeque::new(),
                subscribers: Vec::new(),
            }),
        }
    }
}

impl EventBus {
    /// Publish an event to the backlog and every subscriber. A subscriber whose queue is
    /// full is dropped: its stream ends and it resumes with `since`.
    pub fn publish(&self, kind: &str, op: &str, object: &str, progress: Option<(u64, u64)>) {
        let mut g = self.inner.lock().expect("event bus");
        let e = Event {
            seq: g.next,
            epoch: self.epoch.clone(),
            at_ms: crate::store::now_ms(),
            kind: kind.to_string(),
            op: op.to_string(),
            object: object.to_string(),
            done: progress.map(|p| p.0),
            total: progress.map(|p| p.1),
        };
        g.next += 1;
        if g.ring.len() == EVENT_BACKLOG {
            g.ring.pop_front();
        }
        g.ring.push_back(e.clone());
        g.subscribers
            .retain(|s| s.len() < SUBSCRIBER_QUEUE && s.try_send(e.clone()).is_ok());
    }

    /// Subscribe, resuming after `since` (a sequence number of `epoch`) when given.
    pub fn subscribe(&self, since: Option<u64>, epoch: Option<&str>) -> Subscription {
        let mut g = self.inner.lock().expect("event bus");
        // Unbounded only in type: publish drops a subscriber whose queue is full. A bounded
        // channel would allocate all SUBSCRIBER_QUEUE slots up front.
        let (tx, rx) = smol::channel::unbounded();
        g.subscribers.retain(|s| !s.is_closed());
        let (backlog, gap) = match since {
            None => (Vec::new(), false),
            Some(_) if epoch.is_some_and(|e| e != self.epoch) => (Vec::new(), true),
            Some(s) => {
                let oldest = g.ring.front().map(|e| e.seq).unwrap_or(g.next);
                let backlog: Vec<Event> = g.ring.iter().filter(|e| e.seq > s).cloned().collect();
                (backlog, s + 1 < oldest && s + 1 < g.next)
            }
        };
        g.subscribers.push(tx);
        Subscription {
            epoch: self.epoch.clone(),
            backlog,
            gap,
            live: rx,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_resume_from_the_backlog_and_see_gaps() {
        let bus = EventBus::default();
        bus.publish("object.created", "share.create", "a", None);
        bus.publish("object.created", "share.create", "b", None);
        let s = bus.subscribe(Some(1), None);
        assert!(!s.gap);
        assert_eq!(s.backlog.len(), 1);
        assert_eq!(s.backlog[0].object, "b");
        bus.publish("object.deleted", "share.delete", "a", None);
        assert_eq!(s.live.try_recv().unwrap().seq, 3);
        let other = bus.subscribe(Some(1), Some("another-epoch"));
        assert!(other.gap && other.backlog.is_empty());
        let fresh = bus.subscribe(None, None);
        assert!(fresh.backlog.is_empty() && !fresh.gap);
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_dropped() {
        let bus = EventBus::default();
        let s = bus.subscribe(None, None);
        for i in 0..SUBSCRIBER_QUEUE + 1 {
            bus.publish("object.created", "share.create", &i.to_string(), None);
        }
        assert_eq!(s.live.len(), SUBSCRIBER_QUEUE);
        assert!(s.live.is_closed(), "dropped once its queue was full");
        drop(s);
        let _ = bus.subscribe(None, None);
        assert_eq!(
            bus.inner.lock().unwrap().subscribers.len(),
            1,
            "closed ones forgotten"
        );
    }
}
