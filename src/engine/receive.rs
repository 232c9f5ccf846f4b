//! `snapshot.receive.*`: a send stream (docs/replication.md) into the share `name`.
//!
//! `begin` registers a receive; each `chunk` is decoded as it arrives by the pure
//! [`Decoder`]: once the header and extent table are in, a staging file is made in the
//! pool (a reflink of the base snapshot for an incremental, an empty sparse file for a
//! full stream), the holes are punched, and each data piece is written at its offset.
//! `finish` (src/engine/receive/commit.rs) commits the snapshot once the trailer's
//! checksum matched.
//!
//! Input trust: the stream's bytes come from another node through an admin; each is
//! hostile. The decoder bounds the header and the extent table and names every fault; a
//! fault ends the receive and removes its staging file. At most [`MAX_RECEIVES`] receives
//! run at once (`busy`), a receive without a chunk for `[limits] receive_idle_timeout` is
//! dropped (swept every few seconds, [`Engine::sweep_receives_every`]), and the snapshot's size
//! (with the other receives of the pool) must fit the pool as a sparse share of that size
//! would (`no_space`). Staging files do not outlive a run: start-up removes them.

mod commit;

pub use commit::RECEIVE_INTENT;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciborium::Value;

use super::{blocking, map, Engine};
use crate::error::{Error, Result};
use crate::model::shorten as short;
use crate::model::{self, Demand, Outcome};
use crate::proto::{Answer, ReceiveBeginArgs, ReceiveChunkArgs, ReceiveRef};
use crate::replication::format::{Decoder, Event, Extent, ExtentKind, FeedError, Header};
use crate::store;

/// Most receives in progress at once.
pub const MAX_RECEIVES: usize = 8;

/// What the header said and what the receive does with it.
#[derive(Debug, Clone)]
pub(super) struct Head {
    header: Header,
    /// The receiver already has this snapshot on the share: the rest is only checked.
    already: Option<model::Snapshot>,
}

/// One receive in progress.
#[derive(Debug)]
pub(super) struct Receive {
    pool: String,
    name: String,
    decoder: Decoder,
    head: Option<Head>,
    staging: Option<std::fs::File>,
    received: u64,
    /// The last chunk's offset, length and hash, to accept its repeat.
    last: Option<(u64, usize, u64)>,
    touched: Instant,
}

/// The receives of this run.
#[derive(Debug)]
pub struct Receives {
    map: Mutex<BTreeMap<String, Arc<Mutex<Receive>>>>,
    /// `[limits] receive_idle_timeout`, in seconds (a reload changes it).
    idle_secs: std::sync::atomic::AtomicU64,
}

impl Receives {
    /// No receive yet, dropped after `idle_secs` without a chunk.
    pub fn new(idle_secs: u64) -> Receives {
        Receives {
            map: Mutex::default(),
            idle_secs: idle_secs.into(),
        }
    }

    /// Take a (reloaded) config's idle timeout.
    pub fn update(&self, config: &crate::config::Config) {
        self.idle_secs.store(
            config.limits.receive_idle_timeout,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs.load(std::sync::atomic::Ordering::Relaxed))
    }
}

fn chunk_hash(data: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// The stream's or the file's failure as the engine's error.
fn feed_error(e: FeedError<std::io::Error>) -> Error {
    match e {
        FeedError::Stream(s) => Error::Invalid(format!("send stream refused: {s}")),
        FeedError::Sink(io) => Error::io("writing a received stream", io),
    }
}

/// Check what a header names before anything is made from it: ids go into paths.
fn check_header(h: &Header) -> Result<()> {
    let uuid = |what: &str, v: &str| {
        if model::is_canonical_uuid(v) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "send stream's {what} {:?} is not a UUID as shelf writes them (lowercase, \
                 hyphenated)",
                short(v)
            )))
        }
    };
    uuid("snapshot id", &h.snapshot_id)?;
    if let Some(b) = &h.base {
        uuid("base id", b)?;
    }
    model::validate_name("snapshot", &h.snapshot_name)?;
    model::validate_size(h.size)?;
    Ok(())
}

impl Engine {
    /// `snapshot.receive.begin`: register a receive into share `name`.
    pub(super) async fn begin_receive(&self, a: ReceiveBeginArgs) -> Result<Answer> {
        model::validate_name("share", &a.name)?;
        let pool = self.pick_pool(a.pool.as_deref())?;
        self.drop_idle_receives().await;
        let (pname, name) = (pool.name().to_string(), a.name.clone());
        if let Some(share) = self
            .store
            .call(move |c| store::get_share_by_name(c, &pname, &name))
            .await?
        {
            self.ensure_receivable(&share).await?;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let r = Receive {
            pool: pool.name().to_string(),
            name: a.name,
            decoder: Decoder::new(),
            head: None,
            staging: None,
            received: 0,
            last: None,
            touched: Instant::now(),
        };
        {
            let mut m = self.receives.map.lock().expect("receives");
            if m.len() >= MAX_RECEIVES {
                return Err(Error::Busy(format!(
                    "{} receives are in progress, the most allowed",
                    m.len()
                )));
            }
            m.insert(id.clone(), Arc::new(Mutex::new(r)));
        }
        Ok(Answer::read(&map(vec![("receive", Value::Text(id))])).expect("a map encodes"))
    }

    /// Whether a receive may replace `share`'s content (checked at `begin` and again at
    /// `finish`): it must be `available`; not formatted, since shelfd keeps a formatted
    /// share's filesystem mounted from its volume (a stream of one is received into a new
    /// name, as a raw volume holding that filesystem); and neither exported nor attached,
    /// or its content would change under its clients.
    pub(super) async fn ensure_receivable(&self, share: &model::Share) -> Result<()> {
        super::share::ensure_available(share)?;
        if share.layout == model::Layout::Filesystem {
            return Err(Error::Unsupported(format!(
                "share {} is a formatted share ({}), mounted by shelfd: a receive would \
                 replace its volume under the mounted filesystem; receive into a new share \
                 name",
                share.name,
                share.filesystem.map(|f| f.as_str()).unwrap_or("formatted")
            )));
        }
        let id = share.id.clone();
        let used = self
            .store
            .call(move |c| {
                Ok(!store::list_exports(c, Some(&id), None)?.is_empty()
                    || !store::list_attachments(c, Some(&id))?.is_empty())
            })
            .await?;
        if used {
            return Err(Error::Busy(format!(
                "share {} is exported or attached: a receive would change its content \
                 under its clients (delete its exports first)",
                share.name
            )));
        }
        Ok(())
    }

    fn receive_entry(&self, id: &str) -> Result<Arc<Mutex<Receive>>> {
        self.receives
            .map
            .lock()
            .expect("receives")
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no receive {:?}", short(id))))
    }

    /// Forget receive `id` and remove its staging file.
    pub(super) async fn drop_receive(&self, id: &str) -> bool {
        let gone = self.receives.map.lock().expect("receives").remove(id);
        let Some(r) = gone else { return false };
        let pool = {
            let mut r = r.lock().expect("receive");
            // Closed before its removal: an LVM pool cannot remove an LV held open.
            r.staging = None;
            r.pool.clone()
        };
        if let Ok(p) = self.pool(&pool) {
            let id = id.to_string();
            if let Err(e) = blocking(move || p.remove_staging(Some(&id))).await {
                log::warn!("receive: removing a staging file: {e}");
            }
        }
        true
    }

    /// Drop every receive that has had no chunk for the idle timeout (its sender vanished
    /// without aborting), removing its staging file; returns how many went. A receive
    /// whose chunk is being written (its lock held) is not idle.
    pub async fn drop_idle_receives(&self) -> usize {
        let limit = self.receives.idle();
        let idle: Vec<String> = {
            let m = self.receives.map.lock().expect("receives");
            m.iter()
                .filter(|(_, r)| {
                    r.try_lock()
                        .map(|r| r.touched.elapsed() > limit)
                        .unwrap_or(false)
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut dropped = 0;
        for id in idle {
            if self.drop_receive(&id).await {
                log::info!(
                    "receive {id}: no chunk for {} s ([limits] receive_idle_timeout), dropped \
                     and its staging file removed",
                    limit.as_secs()
                );
                dropped += 1;
            }
        }
        dropped
    }

    /// Sweep idle receives until `stop` closes: every tenth of the idle timeout, between
    /// 1 and 30 s, so an abandoned receive is gone at most that long after it went idle.
    pub async fn sweep_receives_every(&self, stop: smol::channel::Receiver<()>) {
        loop {
            let every =
                (self.receives.idle() / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
            if !crate::server::tick_or_stop(every, &stop).await {
                return;
            }
            self.drop_idle_receives().await;
        }
    }

    /// `snapshot.receive.chunk`: the stream's next bytes.
    pub(super) async fn receive_chunk(&self, a: ReceiveChunkArgs) -> Result<Answer> {
        let Value::Bytes(data) = a.data else {
            return Err(Error::Invalid("data must be a CBOR byte string".into()));
        };
        let entry = self.receive_entry(&a.receive)?;
        {
            let mut r = entry.lock().expect("receive");
            r.touched = Instant::now();
            if a.offset != r.received {
                let repeat = r.last == Some((a.offset, data.len(), chunk_hash(&data)));
                return if repeat {
                    Ok(Answer::received(r.received))
                } else {
                    Err(Error::Invalid(format!(
                        "chunk at offset {} but {} bytes were received: chunks are sequential",
                        a.offset, r.received
                    )))
                };
            }
        }
        match self.take_chunk(&entry, data, a.offset).await {
            Ok(received) => Ok(Answer::received(received)),
            Err(e) => {
                self.drop_receive(&a.receive).await;
                Err(e)
            }
        }
    }

    /// Decode one chunk: up to the header, then prepare the staging file, then the rest.
    async fn take_chunk(
        &self,
        entry: &Arc<Mutex<Receive>>,
        data: Vec<u8>,
        offset: u64,
    ) -> Result<u64> {
        let data = Arc::new(data);
        let (e, d) = (entry.clone(), data.clone());
        // Phase one: until the header and extent table are in (all of the chunk when they
        // were already).
        let (taken, head) = blocking(move || feed_head(&e, &d)).await?;
        if let Some((header, extents)) = head {
            self.prepare_receive(entry, header, extents).await?;
        }
        let (e, d) = (entry.clone(), data.clone());
        blocking(move || feed_data(&e, &d[taken..])).await?;
        let mut r = entry.lock().expect("receive");
        r.received = offset + data.len() as u64;
        r.last = Some((offset, data.len(), chunk_hash(&data)));
        Ok(r.received)
    }

    /// The header is in: check it, decide what the stream is for, make the staging file.
    async fn prepare_receive(
        &self,
        entry: &Arc<Mutex<Receive>>,
        header: Header,
        extents: Vec<Extent>,
    ) -> Result<()> {
        check_header(&header)?;
        // One lock at a time here: the map's is taken before an entry's elsewhere.
        let (pool_name, name) = {
            let r = entry.lock().expect("receive");
            (r.pool.clone(), r.name.clone())
        };
        let receive_id = self
            .receives
            .map
            .lock()
            .expect("receives")
            .iter()
            .find(|(_, v)| Arc::ptr_eq(v, entry))
            .map(|(k, _)| k.clone())
            .ok_or_else(|| {
                Error::NotFound("the receive was aborted or dropped meanwhile".into())
            })?;
        let pool = self.pool(&pool_name)?;
        let (pn, n, h) = (pool_name.clone(), name.clone(), header.clone());
        let (share, have, elsewhere, base) = self
            .store
            .call(move |c| {
                let share = store::get_share_by_name(c, &pn, &n)?;
                let snap = store::get_snapshot(c, &h.snapshot_id)?;
                let have = snap
                    .clone()
                    .filter(|s| Some(&s.share) == share.as_ref().map(|s| &s.id));
                let elsewhere = snap.filter(|_| have.is_none());
                let base = match (&h.base, &share) {
                    (Some(b), Some(sh)) => store::get_snapshot(c, b)?.filter(|s| s.share == sh.id),
                    _ => None,
                };
                Ok((share, have, elsewhere, base))
            })
            .await?;
        if let Some(s) = have {
            entry.lock().expect("receive").head = Some(Head {
                header,
                already: Some(s),
            });
            return Ok(());
        }
        if let Some(s) = elsewhere {
            return Err(Error::AlreadyExists(format!(
                "snapshot {} is on share {} of this node, not on {name}",
                s.id, s.share_name
            )));
        }
        if let Some(b) = &header.base {
            let Some(base) = base.filter(|s| s.state == model::ShareState::Available) else {
                return Err(Error::NotFound(format!(
                    "share {name} has no snapshot {b}, the stream's base: send a full stream, \
                     or an incremental from a snapshot it has"
                )));
            };
            let _ = base;
        } else if share.is_some() && header.base.is_none() {
            // A full stream onto an existing share: allowed (its content is replaced).
        }
        let pending = self.receiving_bytes(&pool_name, entry);
        let room = self.room(&pool).await?;
        let demand = Demand::Share {
            size: header.size.saturating_add(pending),
            preallocated: false,
        };
        self.store
            .call(move |c| {
                room.check(
                    c,
                    "a snapshot receive (with the others in progress)",
                    demand,
                )
            })
            .await?;
        let (p, rid, base, size) = (
            pool.clone(),
            receive_id.clone(),
            header.base.clone(),
            header.size,
        );
        let holes: Vec<Extent> = extents
            .iter()
            .filter(|e| e.kind == ExtentKind::Hole)
            .copied()
            .collect();
        let file = blocking(move || -> Result<std::fs::File> {
            let f = p.create_staging(&rid, base.as_deref(), size)?;
            for h in holes {
                p.punch_staging(&f, h.offset, h.len)?;
            }
            Ok(f)
        })
        .await?;
        {
            // Still registered? An abort or the idle sweep may have dropped the receive while
            // its staging volume was being made (it removed nothing then): checked and set
            // under the map's lock, which a drop takes first.
            let m = self.receives.map.lock().expect("receives");
            if m.get(&receive_id).is_some_and(|v| Arc::ptr_eq(v, entry)) {
                let mut r = entry.lock().expect("receive");
                r.staging = Some(file);
                r.head = Some(Head {
                    header,
                    already: None,
                });
                return Ok(());
            }
        }
        drop(file);
        let (p, rid) = (pool.clone(), receive_id.clone());
        if let Err(e) = blocking(move || p.remove_staging(Some(&rid))).await {
            log::warn!(
                "receive {receive_id}: removing the staging volume of a dropped receive: {e}"
            );
        }
        Err(Error::NotFound(format!(
            "receive {receive_id} was aborted or dropped meanwhile"
        )))
    }

    /// The sizes of the other receives of `pool` that have a staging file.
    fn receiving_bytes(&self, pool: &str, except: &Arc<Mutex<Receive>>) -> u64 {
        let m = self.receives.map.lock().expect("receives");
        m.values()
            .filter(|r| !Arc::ptr_eq(r, except))
            .filter_map(|r| {
                r.try_lock()
                    .ok()
                    .filter(|r| r.pool == pool)
                    .and_then(|r| r.head.as_ref().map(|h| h.header.size))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// `snapshot.receive.abort`: drop a receive and its staging file.
    pub(super) async fn abort_receive(&self, a: ReceiveRef) -> Result<Outcome<String>> {
        if self.drop_receive(&a.receive).await {
            Ok(Outcome::Deleted(a.receive))
        } else {
            Err(Error::NotFound(format!(
                "no receive {:?}",
                short(&a.receive)
            )))
        }
    }

    /// Start-up: staging files of a previous run go (receives do not outlive a run).
    pub(super) async fn recover_receives(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for name in self.pool_names() {
            let p = self.pool(&name)?;
            let n = blocking(move || p.remove_staging(None)).await?;
            if n > 0 {
                out.push(format!("pool {name}: {n} unfinished receive(s) removed"));
            }
        }
        Ok(out)
    }
}

/// Feed `data` until the decoder has the header and extent table: how many bytes it took,
/// and the head when it arrived in this chunk.
type Taken = (usize, Option<(Header, Vec<Extent>)>);

fn feed_head(entry: &Mutex<Receive>, data: &[u8]) -> Result<Taken> {
    let mut r = entry.lock().expect("receive");
    if r.decoder.header().is_some() {
        return Ok((0, None));
    }
    let mut got = None;
    let n = r
        .decoder
        .feed_until_head::<std::io::Error>(data, &mut |ev| {
            if let Event::Head(h, e) = ev {
                got = Some((h.clone(), e.to_vec()));
            }
            Ok(())
        })
        .map_err(feed_error)?;
    Ok((n, got))
}

/// Feed the rest of a chunk: data into the staging file (or only checked, for a snapshot
/// the receiver has).
fn feed_data(entry: &Mutex<Receive>, data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut guard = entry.lock().expect("receive");
    let r = &mut *guard;
    let file = r.staging.as_ref();
    r.decoder
        .feed::<std::io::Error>(data, &mut |ev| match (ev, file) {
            (Event::Data { offset, bytes }, Some(f)) => f.write_all_at(bytes, offset),
            _ => Ok(()),
        })
        .map_err(feed_error)
}
