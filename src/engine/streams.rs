//! Server-side byte streams, read by the client in chunks: the inverse of
//! `image.upload`. An operation that produces bytes (`snapshot.export` without a path,
//! `snapshot.send`) opens a stream with a [`StreamSource`] and answers its id; the client
//! pulls the bytes with `stream.read {stream, max?}` and may drop them with
//! `stream.close {stream}`.
//!
//! Each stream has a job (its op and target) that counts the bytes read, so `job.show`
//! and the `job.progress` events follow it, and `job.cancel` ends it. The job ends `done`
//! when the client has read the end, `cancelled` when it was cancelled or closed, and
//! `failed` when the source failed or the stream was left idle past
//! `[limits] stream_idle_timeout`. Whenever a stream ends before its end, its source's
//! [`StreamSource::abort`] runs (off the event loop), so the source removes what it
//! made (a staging file).
//!
//! Bounds: at most `[limits] max_streams` open streams (`busy` beyond); one read
//! returns at most `max_frame_size` minus [`READ_OVERHEAD`] bytes, so its reply fits in a
//! frame; a stream nobody reads for `stream_idle_timeout` seconds expires. A stream that
//! ended leaves a small record (its final offset and how it ended) for the same time, so
//! a read after the end answers `end: true` and a repeated close answers `changed:
//! false`; at most [`MAX_RECORDS`] such records are kept. Streams belong to the running
//! `shelfd`: [`Streams::shutdown`] aborts those still open.
//!
//! Input trust: the stream ids and `max` are an admin's; the bytes are the source's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ciborium::Value;
use smol::channel::{Receiver, Sender};

use super::blocking;
use super::jobs::{EventBus, JobCtx, Jobs};
use crate::error::{Error, Result};
use crate::model::shorten as short;
use crate::model::Outcome;
use crate::store::Store;

/// A source of bytes read by `stream.read`; called off the event loop.
pub trait StreamSource: Send + 'static {
    /// Up to `max` next bytes; an empty vector is the end of the stream.
    fn read(&mut self, max: usize) -> Result<Vec<u8>>;
    /// The stream was closed, cancelled, timed out or dropped before its end.
    fn abort(&mut self) {}
}

/// Bytes of a `stream.read` reply frame beside its data (the envelope `{id, ok: {data,
/// end, offset}}` takes at most 48), with room to spare.
pub const READ_OVERHEAD: u32 = 128;

/// Most records of ended streams kept (the oldest go first).
pub const MAX_RECORDS: usize = 1024;

/// One `stream.read` answer: the bytes from `offset` on, and whether the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The bytes (empty at the end).
    pub data: Vec<u8>,
    /// The stream has no more bytes: this read found its end.
    pub end: bool,
    /// The position in the stream of the first byte of `data`.
    pub offset: u64,
}

/// How a stream that is no longer open ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// The client read its end.
    Read,
    /// `stream.close` before its end.
    Closed,
    /// `job.cancel`.
    Cancelled,
    /// Nobody read it for the idle timeout.
    Expired,
    /// Its source failed (the message).
    Failed(String),
    /// shelfd stopped.
    Shutdown,
}

/// The record an ended stream leaves.
#[derive(Debug, Clone)]
struct Record {
    ended: Ended,
    offset: u64,
    at: Instant,
}

/// An open stream.
struct Entry {
    id: String,
    /// The stream's job, set once the job started.
    ctx: OnceLock<JobCtx>,
    /// `None` once the stream ended or was aborted.
    src: Mutex<Option<Box<dyn StreamSource>>>,
    /// Bytes read so far.
    offset: AtomicU64,
    /// When it was last read (or opened).
    last: Mutex<Instant>,
    /// A read is running (the stream does not expire under it).
    reading: AtomicBool,
    /// Tells the job how the stream ended.
    end_tx: Sender<Result<Value>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("offset", &self.offset.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Entry {
    fn touch(&self) {
        *self.last.lock().expect("stream clock") = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last.lock().expect("stream clock").elapsed()
    }

    fn job(&self) -> Option<&JobCtx> {
        self.ctx.get()
    }

    /// Take the source out and abort it (blocking: the source may remove files).
    fn abort_source(&self) {
        let src = self.src.lock().expect("stream source").take();
        if let Some(mut s) = src {
            s.abort();
        }
    }
}

/// The open streams and the records of ended ones.
#[derive(Debug, Default)]
struct Registry {
    open: BTreeMap<String, Arc<Entry>>,
    /// Places taken by opens whose job is starting.
    reserved: usize,
    records: BTreeMap<String, Record>,
}

impl Registry {
    /// Keep the record of an ended stream, dropping expired ones and, past
    /// [`MAX_RECORDS`], the oldest.
    fn record(&mut self, id: &str, ended: Ended, offset: u64, keep: Duration) {
        self.records.retain(|_, r| r.at.elapsed() < keep);
        while self.records.len() >= MAX_RECORDS {
            let oldest = self
                .records
                .iter()
                .min_by_key(|(_, r)| r.at)
                .map(|(k, _)| k.clone())
                .expect("records are not empty");
            self.records.remove(&oldest);
        }
        self.records.insert(
            id.to_string(),
            Record {
                ended,
                offset,
                at: Instant::now(),
            },
        );
    }
}

/// The byte streams of this run of shelfd.
#[derive(Debug)]
pub struct Streams {
    reg: Mutex<Registry>,
    max_streams: AtomicUsize,
    idle_secs: AtomicU64,
    max_frame: AtomicU32,
    store: Store,
    jobs: Arc<Jobs>,
    bus: Arc<EventBus>,
}

/// What a job waiting for its stream is woken by.
enum Woke {
    End(Result<Value>),
    Cancelled,
    Tick,
}

impl Streams {
    /// The registry, with its bounds from the config.
    pub fn new(
        config: &crate::config::Config,
        store: Store,
        jobs: Arc<Jobs>,
        bus: Arc<EventBus>,
    ) -> Streams {
        let s = Streams {
            reg: Mutex::default(),
            max_streams: AtomicUsize::new(0),
            idle_secs: AtomicU64::new(0),
            max_frame: AtomicU32::new(0),
            store,
            jobs,
            bus,
        };
        s.update(config);
        s
    }

    /// Take the bounds of a (reloaded) config; streams already open keep running.
    pub fn update(&self, config: &crate::config::Config) {
        self.max_streams
            .store(config.limits.max_streams, Ordering::Relaxed);
        self.idle_secs
            .store(config.limits.stream_idle_timeout, Ordering::Relaxed);
        self.max_frame
            .store(config.max_frame_size, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs.load(Ordering::Relaxed))
    }

    /// The most bytes one read returns: what fits in a reply frame.
    pub fn read_limit(&self) -> usize {
        self.max_frame
            .load(Ordering::Relaxed)
            .saturating_sub(READ_OVERHEAD)
            .max(1) as usize
    }

    /// Streams open now.
    pub fn open_count(&self) -> usize {
        self.reg.lock().expect("streams").open.len()
    }

    /// Open a stream over `src`; a job (`op`, `target`) counts its bytes against `total`
    /// (when known) and `job.cancel` ends it. Returns (stream id, job id). `busy` when
    /// `[limits] max_streams` streams are open; then, or if the job cannot start, `src`
    /// is aborted.
    pub async fn open(
        self: &Arc<Self>,
        op: &str,
        target: &str,
        total: Option<u64>,
        src: Box<dyn StreamSource>,
    ) -> Result<(String, String)> {
        let id = uuid::Uuid::new_v4().to_string();
        let (end_tx, end_rx) = smol::channel::bounded(1);
        let entry = Arc::new(Entry {
            id: id.clone(),
            ctx: OnceLock::new(),
            src: Mutex::new(Some(src)),
            offset: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
            reading: AtomicBool::new(false),
            end_tx,
        });
        let refused = {
            let mut reg = self.reg.lock().expect("streams");
            let max = self.max_streams.load(Ordering::Relaxed);
            let taken = reg.open.len() + reg.reserved;
            if taken >= max {
                Some(taken)
            } else {
                reg.reserved += 1;
                None
            }
        };
        if let Some(taken) = refused {
            let e = entry.clone();
            blocking(move || e.abort_source()).await;
            return Err(Error::Busy(format!(
                "{taken} streams are open, the most [limits] max_streams allows; read or close one"
            )));
        }
        let (streams, e) = (self.clone(), entry.clone());
        let started = self
            .jobs
            .start(&self.store, &self.bus, op, target, move |ctx| {
                if let Some(t) = total {
                    ctx.set_total(t);
                }
                let _ = e.ctx.set(ctx.clone());
                {
                    let mut reg = streams.reg.lock().expect("streams");
                    reg.reserved -= 1;
                    reg.open.insert(e.id.clone(), e.clone());
                }
                streams.supervise(e, ctx, end_rx)
            })
            .await;
        match started {
            Ok(job) => Ok((id, job)),
            Err(err) => {
                if entry.ctx.get().is_none() {
                    self.reg.lock().expect("streams").reserved -= 1;
                }
                self.reg.lock().expect("streams").open.remove(&id);
                blocking(move || entry.abort_source()).await;
                Err(err)
            }
        }
    }

    /// The stream's job: waits for its end, and ends it when cancelled or idle too long.
    async fn supervise(
        self: Arc<Self>,
        e: Arc<Entry>,
        ctx: JobCtx,
        end_rx: Receiver<Result<Value>>,
    ) -> Result<Value> {
        loop {
            let idle = self.idle();
            let left = idle.saturating_sub(e.idle_for()) + Duration::from_millis(10);
            let woke = futures_lite::future::or(
                async { Woke::End(end_rx.recv().await.unwrap_or_else(|_| Err(gone(&e.id)))) },
                futures_lite::future::or(
                    async {
                        ctx.cancellation().await;
                        Woke::Cancelled
                    },
                    async {
                        smol::Timer::after(left).await;
                        Woke::Tick
                    },
                ),
            )
            .await;
            let ended = match woke {
                Woke::End(r) => return r,
                Woke::Cancelled => Ended::Cancelled,
                Woke::Tick if e.idle_for() >= idle && !e.reading.load(Ordering::Relaxed) => {
                    Ended::Expired
                }
                Woke::Tick => continue,
            };
            let why = match &ended {
                Ended::Expired => format!(
                    "stream {} was not read for {} s and expired ([limits] stream_idle_timeout)",
                    e.id,
                    idle.as_secs()
                ),
                _ => format!("stream {} was cancelled", e.id),
            };
            if !self.finish(&e.id, ended).await {
                // It ended another way at the same moment: that way wins.
                if let Ok(r) = end_rx.try_recv() {
                    return r;
                }
            }
            return Err(Error::Busy(why));
        }
    }

    /// Take an open stream out, record how it ended and abort its source. `false` when it
    /// was no longer open.
    async fn finish(&self, id: &str, ended: Ended) -> bool {
        let entry = {
            let mut reg = self.reg.lock().expect("streams");
            let Some(e) = reg.open.remove(id) else {
                return false;
            };
            let offset = e.offset.load(Ordering::Relaxed);
            reg.record(id, ended, offset, self.idle());
            e
        };
        blocking(move || entry.abort_source()).await;
        true
    }

    /// `stream.read`: the next bytes of a stream, at most `max` and at most
    /// [`Streams::read_limit`].
    pub async fn read(&self, id: &str, max: Option<u64>) -> Result<Chunk> {
        let limit = self.read_limit();
        let max = match max {
            Some(0) => return Err(Error::Invalid("max must be at least 1".into())),
            Some(m) => usize::try_from(m).unwrap_or(usize::MAX).min(limit),
            None => limit,
        };
        let entry = {
            let reg = self.reg.lock().expect("streams");
            match reg.open.get(id) {
                Some(e) => e.clone(),
                None => return ended_read(id, reg.records.get(id)),
            }
        };
        if entry.job().is_some_and(|j| j.cancelled()) {
            return Err(Error::Busy(format!("stream {} was cancelled", short(id))));
        }
        entry.reading.store(true, Ordering::Relaxed);
        entry.touch();
        let e = entry.clone();
        let got = blocking(move || read_source(&e, max)).await;
        entry.touch();
        entry.reading.store(false, Ordering::Relaxed);
        let (data, offset) = match got {
            Ok(r) => r,
            Err(err) => {
                let failed = self.finish(id, Ended::Failed(err.to_string())).await;
                if failed {
                    let _ = entry.end_tx.try_send(Err(err.clone()));
                }
                return Err(err);
            }
        };
        let at = offset + data.len() as u64;
        if let Some(j) = entry.job() {
            j.progress(at);
        }
        let end = data.is_empty();
        if end {
            let mine = {
                let mut reg = self.reg.lock().expect("streams");
                let mine = reg.open.remove(id).is_some();
                if mine {
                    reg.record(id, Ended::Read, at, self.idle());
                }
                mine
            };
            if mine {
                let done = super::map(vec![
                    ("stream", Value::Text(id.to_string())),
                    ("bytes", Value::Integer(at.into())),
                ]);
                let _ = entry.end_tx.try_send(Ok(done));
            }
        }
        Ok(Chunk { data, end, offset })
    }

    /// `stream.close`: end a stream. `changed: true` when it was open (its source is
    /// aborted and its job cancelled), `false` when it had already ended.
    pub async fn close(&self, id: &str) -> Result<Outcome<String>> {
        let entry = {
            let reg = self.reg.lock().expect("streams");
            match reg.open.get(id) {
                Some(e) => e.clone(),
                None if reg.records.contains_key(id) => {
                    return Ok(Outcome::AlreadyGone(id.to_string()))
                }
                None => return Err(Error::NotFound(format!("no stream {:?}", short(id)))),
            }
        };
        if let Some(j) = entry.job() {
            let _ = self.jobs.cancel(j.id());
        }
        if self.finish(id, Ended::Closed).await {
            Ok(Outcome::Deleted(id.to_string()))
        } else {
            Ok(Outcome::AlreadyGone(id.to_string()))
        }
    }

    /// Abort every open stream (shelfd is stopping).
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self
            .reg
            .lock()
            .expect("streams")
            .open
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let entry = self.reg.lock().expect("streams").open.get(&id).cloned();
            if self.finish(&id, Ended::Shutdown).await {
                if let Some(e) = entry {
                    let _ = e.end_tx.try_send(Err(Error::Busy("shelfd stopped".into())));
                }
            }
        }
    }
}

/// Read from a stream's source, at its offset; (bytes, offset of the first).
fn read_source(e: &Entry, max: usize) -> Result<(Vec<u8>, u64)> {
    let mut src = e.src.lock().expect("stream source");
    let Some(s) = src.as_mut() else {
        return Err(gone(&e.id));
    };
    let offset = e.offset.load(Ordering::Relaxed);
    let data = s.read(max)?;
    if data.len() > max {
        return Err(Error::Internal(format!(
            "stream {}: its source returned {} bytes for a read of at most {max}",
            e.id,
            data.len()
        )));
    }
    e.offset.fetch_add(data.len() as u64, Ordering::Relaxed);
    if data.is_empty() {
        // The end: let the source go (its drop may close or remove files).
        src.take();
    }
    Ok((data, offset))
}

fn gone(id: &str) -> Error {
    Error::NotFound(format!("stream {} is no longer open", short(id)))
}

/// A read of a stream that is not open: its end again, or why it is gone.
fn ended_read(id: &str, record: Option<&Record>) -> Result<Chunk> {
    let id = short(id);
    let Some(r) = record else {
        return Err(Error::NotFound(format!("no stream {id:?}")));
    };
    Err(match &r.ended {
        Ended::Read => {
            return Ok(Chunk {
                data: Vec::new(),
                end: true,
                offset: r.offset,
            })
        }
        Ended::Closed => Error::NotFound(format!("stream {id} was closed")),
        Ended::Cancelled => Error::NotFound(format!("stream {id} was cancelled")),
        Ended::Expired => Error::NotFound(format!(
            "stream {id} was not read for the idle timeout and expired"
        )),
        Ended::Failed(m) => Error::NotFound(format!("stream {id} failed: {m}")),
        Ended::Shutdown => Error::NotFound(format!("stream {id} ended when shelfd stopped")),
    })
}

#[cfg(test)]
#[path = "streams_tests.rs"]
mod tests;
