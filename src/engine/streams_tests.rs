//! The stream registry against a real job table (a real SQLite file) with a simple
//! in-memory source.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;

/// `len` bytes of a counting pattern, `chunk` at most per read; records whether it was
/// aborted and can be told to fail at a position.
struct Pattern {
    at: u64,
    len: u64,
    aborted: Arc<AtomicBool>,
    fail_at: Option<u64>,
}

impl StreamSource for Pattern {
    fn read(&mut self, max: usize) -> Result<Vec<u8>> {
        if self.fail_at.is_some_and(|f| self.at >= f) {
            return Err(Error::Internal("the source broke".into()));
        }
        let n = (self.len - self.at).min(max as u64);
        let out = (self.at..self.at + n).map(|i| (i % 251) as u8).collect();
        self.at += n;
        Ok(out)
    }
    fn abort(&mut self) {
        self.aborted.store(true, Ordering::SeqCst);
    }
}

fn pattern(len: u64) -> (Box<dyn StreamSource>, Arc<AtomicBool>) {
    let aborted = Arc::new(AtomicBool::new(false));
    let src = Pattern {
        at: 0,
        len,
        aborted: aborted.clone(),
        fail_at: None,
    };
    (Box::new(src), aborted)
}

struct Rig {
    _dir: tempfile::TempDir,
    store: Store,
    jobs: Arc<Jobs>,
    streams: Arc<Streams>,
}

async fn rig(edit: impl FnOnce(&mut Config)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("shelf.db")).await.unwrap();
    let mut config = Config::embedded();
    edit(&mut config);
    let jobs: Arc<Jobs> = Arc::default();
    let streams = Arc::new(Streams::new(
        &config,
        store.clone(),
        jobs.clone(),
        Arc::default(),
    ));
    Rig {
        _dir: dir,
        store,
        jobs,
        streams,
    }
}

impl Rig {
    /// The job's state once it is no longer running (within 10 s).
    async fn ended(&self, job: &str) -> crate::store::JobRow {
        let t0 = Instant::now();
        loop {
            let row = self.jobs.show(&self.store, job).await.unwrap();
            if row.state != "running" {
                return row;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "job {job} still running"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }
}

#[test]
fn a_stream_reads_in_order_to_its_end_and_its_job_counts_the_bytes() {
    smol::block_on(async {
        let r = rig(|_| {}).await;
        let (src, aborted) = pattern(10_000);
        let (id, job) = r
            .streams
            .open("test.op", "t", Some(10_000), src)
            .await
            .unwrap();
        let mut got = Vec::new();
        loop {
            let c = r.streams.read(&id, Some(3000)).await.unwrap();
            assert_eq!(c.offset, got.len() as u64);
            assert!(c.data.len() <= 3000);
            got.extend_from_slice(&c.data);
            if c.end {
                assert!(c.data.is_empty());
                break;
            }
        }
        let want: Vec<u8> = (0..10_000u64).map(|i| (i % 251) as u8).collect();
        assert_eq!(got, want);
        let again = r.streams.read(&id, None).await.unwrap();
        assert_eq!(
            (again.data.len(), again.end, again.offset),
            (0, true, 10_000)
        );
        let row = r.ended(&job).await;
        assert_eq!(
            (row.state.as_str(), row.done, row.total),
            ("done", 10_000, 10_000)
        );
        assert_eq!((row.op.as_str(), row.target.as_str()), ("test.op", "t"));
        assert!(
            !aborted.load(Ordering::SeqCst),
            "a stream read to its end is not aborted"
        );
        assert_eq!(r.streams.open_count(), 0);
        let closed = r.streams.close(&id).await.unwrap();
        assert!(!closed.changed());
    });
}

#[test]
fn one_read_fits_in_a_frame() {
    smol::block_on(async {
        let r = rig(|c| c.max_frame_size = 4096).await;
        let (src, _) = pattern(1 << 20);
        let (id, _) = r.streams.open("test.op", "t", None, src).await.unwrap();
        let c = r.streams.read(&id, Some(u64::MAX)).await.unwrap();
        assert_eq!(c.data.len(), 4096 - READ_OVERHEAD as usize);
        let whole = crate::proto::Answer::stream_chunk(c.data, c.end, u64::MAX);
        let frame = crate::proto::frame::encode(&crate::engine::map(vec![
            ("id", ciborium::Value::Integer(u64::MAX.into())),
            ("ok", whole.into_body().into_value()),
        ]));
        assert!(frame.len() <= 4096, "a reply of {} bytes", frame.len());
        let c = r.streams.read(&id, None).await.unwrap();
        assert_eq!(c.data.len(), 4096 - READ_OVERHEAD as usize);
        let e = r.streams.read(&id, Some(0)).await.unwrap_err();
        assert_eq!(e.code().as_str(), "invalid_argument");
    });
}

#[test]
fn past_max_streams_an_open_is_busy_and_its_source_aborted() {
    smol::block_on(async {
        let r = rig(|c| c.limits.max_streams = 2).await;
        let mut open = Vec::new();
        for _ in 0..2 {
            let (src, _) = pattern(10);
            open.push(r.streams.open("test.op", "t", None, src).await.unwrap());
        }
        let (src, aborted) = pattern(10);
        let e = r.streams.open("test.op", "t", None, src).await.unwrap_err();
        assert_eq!(e.code().as_str(), "busy", "{e}");
        assert!(aborted.load(Ordering::SeqCst));
        // Closing one frees its place.
        assert!(r.streams.close(&open[0].0).await.unwrap().changed());
        let (src, _) = pattern(10);
        r.streams.open("test.op", "t", None, src).await.unwrap();
    });
}

#[test]
fn close_aborts_the_source_and_cancels_the_job() {
    smol::block_on(async {
        let r = rig(|_| {}).await;
        let (src, aborted) = pattern(1 << 20);
        let (id, job) = r.streams.open("test.op", "t", None, src).await.unwrap();
        r.streams.read(&id, Some(100)).await.unwrap();
        let o = r.streams.close(&id).await.unwrap();
        assert!(o.changed());
        assert!(aborted.load(Ordering::SeqCst));
        assert!(!r.streams.close(&id).await.unwrap().changed());
        let e = r.streams.read(&id, None).await.unwrap_err();
        assert_eq!(e.code().as_str(), "not_found", "{e}");
        assert!(e.to_string().contains("closed"), "{e}");
        assert_eq!(r.ended(&job).await.state, "cancelled");
        let e = r.streams.close("no-such-stream").await.unwrap_err();
        assert_eq!(e.code().as_str(), "not_found");
    });
}

#[test]
fn job_cancel_ends_the_stream() {
    smol::block_on(async {
        let r = rig(|_| {}).await;
        let (src, aborted) = pattern(1 << 20);
        let (id, job) = r.streams.open("test.op", "t", None, src).await.unwrap();
        r.streams.read(&id, Some(100)).await.unwrap();
        assert!(r.jobs.cancel(&job).unwrap());
        let row = r.ended(&job).await;
        assert_eq!((row.state.as_str(), row.done), ("cancelled", 100));
        assert!(aborted.load(Ordering::SeqCst));
        assert_eq!(r.streams.open_count(), 0);
        let e = r.streams.read(&id, None).await.unwrap_err();
        assert!(e.to_string().contains("cancelled"), "{e}");
    });
}

#[test]
fn an_idle_stream_expires() {
    smol::block_on(async {
        let r = rig(|c| c.limits.stream_idle_timeout = 1).await;
        let (src, aborted) = pattern(1 << 20);
        let (id, job) = r.streams.open("test.op", "t", None, src).await.unwrap();
        let row = r.ended(&job).await;
        assert_eq!(row.state, "failed");
        assert!(
            row.error_message
                .as_deref()
                .unwrap_or("")
                .contains("expired"),
            "{row:?}"
        );
        assert!(aborted.load(Ordering::SeqCst));
        let e = r.streams.read(&id, None).await.unwrap_err();
        assert_eq!(e.code().as_str(), "not_found");
        assert!(e.to_string().contains("expired"), "{e}");
    });
}

#[test]
fn a_failing_source_fails_the_read_and_the_job() {
    smol::block_on(async {
        let r = rig(|_| {}).await;
        let aborted = Arc::new(AtomicBool::new(false));
        let src = Box::new(Pattern {
            at: 0,
            len: 1000,
            aborted: aborted.clone(),
            fail_at: Some(500),
        });
        let (id, job) = r.streams.open("test.op", "t", None, src).await.unwrap();
        r.streams.read(&id, Some(500)).await.unwrap();
        let e = r.streams.read(&id, Some(500)).await.unwrap_err();
        assert!(e.to_string().contains("broke"), "{e}");
        let row = r.ended(&job).await;
        assert_eq!(row.state, "failed");
        assert!(aborted.load(Ordering::SeqCst));
        let e = r.streams.read(&id, None).await.unwrap_err();
        assert!(e.to_string().contains("failed"), "{e}");
    });
}

#[test]
fn shutdown_aborts_open_streams() {
    smol::block_on(async {
        let r = rig(|_| {}).await;
        let (src, aborted) = pattern(1 << 20);
        let (_, job) = r.streams.open("test.op", "t", None, src).await.unwrap();
        r.streams.shutdown().await;
        assert!(aborted.load(Ordering::SeqCst));
        assert_eq!(r.streams.open_count(), 0);
        assert_eq!(r.ended(&job).await.state, "failed");
    });
}

#[test]
fn records_of_ended_streams_are_bounded() {
    let mut reg = Registry::default();
    for i in 0..MAX_RECORDS + 10 {
        reg.record(&i.to_string(), Ended::Read, 0, Duration::from_secs(60));
    }
    assert_eq!(reg.records.len(), MAX_RECORDS);
    assert!(!reg.records.contains_key("0"));
}
