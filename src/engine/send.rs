//! `snapshot.send`: a snapshot as a send stream (docs/replication.md), read by the client
//! with `stream.read` through the byte-stream plumbing of src/engine/streams.rs.
//!
//! The diff is computed by the pool before the stream opens ([`crate::pool::Pool::send_plan`]:
//! the two snapshots' extent maps on a file pool, the thin pool's metadata on LVM; no data
//! read); the stream then reads only the data extents, in order,
//! with `pread`, and the trailer's checksum is computed as the bytes go out. Memory: the
//! extent table and one read buffer.

use std::os::unix::fs::FileExt;

use ciborium::Value;

use super::streams::StreamSource;
use super::{blocking, map, Engine};
use crate::error::{Error, Result};
use crate::model::{ShareState, Snapshot};
use crate::proto::{Answer, SnapshotSendArgs};
use crate::replication::format::{stream_len, Encoder, Extent, ExtentKind, Header};
use crate::store;

/// Most extents read from one snapshot's map (32 bytes of memory each).
pub const MAX_MAPPED: usize = 1_000_000;
/// Largest piece of data one source read returns.
const READ_MAX: usize = 1 << 20;

/// The bytes of one send stream, produced in order.
#[derive(Debug)]
struct SendSource {
    file: std::fs::File,
    /// Declared after `file`, so the file is closed before the pool is told.
    _release: Release,
    head: Vec<u8>,
    head_at: usize,
    data: Vec<Extent>,
    index: usize,
    done: u64,
    encoder: Option<Encoder>,
    trailer: Vec<u8>,
    trailer_at: usize,
}

/// Tells the pool a send is over ([`crate::pool::Pool::send_done`]) when dropped, off the
/// event loop (an LVM pool runs `lvchange`), then lets the snapshot's hold go.
struct Release {
    pool: Option<std::sync::Arc<dyn crate::pool::Pool>>,
    snap: String,
    hold: Option<super::snapshot_export::Hold>,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Release({})", self.snap)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            let snap = std::mem::take(&mut self.snap);
            let hold = self.hold.take();
            smol::unblock(move || {
                p.send_done(&snap);
                drop(hold);
            })
            .detach();
        }
    }
}

impl StreamSource for SendSource {
    fn read(&mut self, max: usize) -> Result<Vec<u8>> {
        let max = max.clamp(1, READ_MAX);
        if self.head_at < self.head.len() {
            let end = (self.head_at + max).min(self.head.len());
            let out = self.head[self.head_at..end].to_vec();
            self.head_at = end;
            return Ok(out);
        }
        while let Some(e) = self.data.get(self.index) {
            if self.done == e.len {
                self.index += 1;
                self.done = 0;
                continue;
            }
            let n = (e.len - self.done).min(max as u64) as usize;
            let mut buf = vec![0u8; n];
            self.file
                .read_exact_at(&mut buf, e.offset + self.done)
                .map_err(|err| Error::io("reading a snapshot for a send", err))?;
            self.done += n as u64;
            if let Some(enc) = self.encoder.as_mut() {
                enc.data(&buf);
            }
            return Ok(buf);
        }
        if let Some(enc) = self.encoder.take() {
            self.trailer = enc.finish();
        }
        let end = (self.trailer_at + max).min(self.trailer.len());
        let out = self.trailer[self.trailer_at..end].to_vec();
        self.trailer_at = end;
        Ok(out)
    }
}

impl Engine {
    /// `snapshot.send`: open a byte stream of the snapshot, incremental from `from`.
    pub(super) async fn send_snapshot(&self, a: SnapshotSendArgs) -> Result<Answer> {
        let (r, sh, p) = (a.snapshot.clone(), a.share.clone(), a.pool.clone());
        let snap = self
            .store
            .call(move |c| store::find_snapshot(c, &r, sh.as_deref(), p.as_deref()))
            .await?;
        available(&snap)?;
        let base = match &a.from {
            Some(f) => {
                let (f, share) = (f.clone(), snap.share.clone());
                let b = self
                    .store
                    .call(move |c| store::find_snapshot(c, &f, Some(&share), None))
                    .await?;
                available(&b)?;
                if b.id == snap.id || b.created_at > snap.created_at {
                    return Err(Error::Invalid(format!(
                        "the base {} must be an older snapshot of share {} than {}",
                        b.name, snap.share_name, snap.name
                    )));
                }
                Some(b)
            }
            None => None,
        };
        // Held until the stream's source goes (the base until the plan is made): their
        // delete is `busy` meanwhile (an LVM pool could not remove the LV a send reads).
        // Taken under the share's lock, with the rows read again, as an export's hold is:
        // a delete is then either done before (not found) or refused.
        let (hold, base_hold) = {
            let _g = self.locks.lock(&snap.share).await;
            let ids = (snap.id.clone(), base.as_ref().map(|b| b.id.clone()));
            let (now, base_now) = self
                .store
                .call(move |c| {
                    let gone =
                        |id: &str| Error::NotFound(format!("snapshot {id} was deleted meanwhile"));
                    let now = store::get_snapshot(c, &ids.0)?.ok_or_else(|| gone(&ids.0))?;
                    let base_now = match &ids.1 {
                        Some(b) => Some(store::get_snapshot(c, b)?.ok_or_else(|| gone(b))?),
                        None => None,
                    };
                    Ok((now, base_now))
                })
                .await?;
            available(&now)?;
            if let Some(b) = &base_now {
                available(b)?;
            }
            (
                self.exporting.take(&snap.id),
                base.as_ref().map(|b| self.exporting.take(&b.id)),
            )
        };
        let pool = self.pool(&snap.pool)?;
        let (p, s, b) = (pool.clone(), snap.clone(), base.clone());
        let plan = blocking(move || p.send_plan(&s, b.as_ref(), MAX_MAPPED)).await?;
        drop(base_hold);
        // From here the pool holds what it opened for the send until `send_done`, which
        // the source's drop runs; the snapshot's hold goes after that.
        let release = Release {
            pool: Some(pool),
            snap: snap.id.clone(),
            hold: Some(hold),
        };
        let (file, extents) = (plan.file, plan.extents);
        let header = Header {
            size: snap.size,
            created_at: snap.created_at,
            snapshot_id: snap.id.clone(),
            snapshot_name: snap.name.clone(),
            share_id: snap.share.clone(),
            share_name: snap.share_name.clone(),
            node: Some(self.node.name.clone()),
            base: base.as_ref().map(|b| b.id.clone()),
            node_id: Some(self.node.id.clone()),
        };
        let size = stream_len(&header, &extents);
        let (encoder, head) = Encoder::start(&header, &extents);
        let data: Vec<Extent> = extents
            .iter()
            .filter(|e| e.kind == ExtentKind::Data)
            .copied()
            .collect();
        log::info!(
            "send: snapshot {} ({}) of share {}{}: {} extents, {} data bytes, stream {size} bytes",
            snap.name,
            snap.id,
            snap.share_name,
            base.as_ref()
                .map(|b| format!(" from {}", b.name))
                .unwrap_or_default(),
            extents.len(),
            crate::replication::diff::data_bytes(&extents)
        );
        let src = SendSource {
            file,
            _release: release,
            head,
            head_at: 0,
            data,
            index: 0,
            done: 0,
            encoder: Some(encoder),
            trailer: Vec::new(),
            trailer_at: 0,
        };
        let target = format!("{}@{}", snap.share_name, snap.name);
        let (stream, job) = self
            .streams
            .open("snapshot.send", &target, Some(size), Box::new(src))
            .await?;
        let base_value = match &base {
            Some(b) => Value::Text(b.id.clone()),
            None => Value::Null,
        };
        super::answer(Answer::read(&map(vec![
            ("stream", Value::Text(stream)),
            ("job", Value::Text(job)),
            ("size", Value::Integer(size.into())),
            ("base", base_value),
        ])))
    }
}

/// Only an `available` snapshot is sent.
fn available(s: &Snapshot) -> Result<()> {
    if s.state == ShareState::Available {
        Ok(())
    } else {
        Err(Error::Busy(format!(
            "snapshot {} is {}",
            s.name,
            s.state.as_str()
        )))
    }
}
