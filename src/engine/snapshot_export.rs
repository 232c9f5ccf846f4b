//! `snapshot.export`: a snapshot's data as a raw (sparse-aware) or qcow2 image, written
//! to a file beneath one of `[images] export_dirs` by a job, or read by the client over
//! the socket as a byte stream (`stream.read`, see `streams.rs`).
//!
//! The snapshot is opened checked (beneath the pool, no symlink, its own identity) and
//! held while it is exported: its delete is `busy` until the export ends. A raw export
//! walks the snapshot with `SEEK_DATA`/`SEEK_HOLE`: holes are not read (over the socket
//! they are zeros; in a file they stay holes, and so do all-zero blocks). qcow2 goes
//! through `qemu-img convert -f raw -O qcow2`, confined by Landlock to reading the
//! snapshot and writing its output. A failure or a cancel leaves nothing: the destination
//! is written under a temporary name and renamed into place at the end (the journal names
//! it, so a restart removes it); a qcow2 stream's staging file (`.export-*` in the pool's
//! image directory) goes when the stream ends and at start-up.
//!
//! Input trust: the arguments are an admin's; the snapshot's bytes are a tenant's, read
//! as data and given only to the confined converter with a fixed `-f raw`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ciborium::Value;

use super::jobs::{JobCtx, JobHandle};
use super::streams::StreamSource;
use super::{blocking, Engine};
use crate::error::{Error, Result};
use crate::model::{ShareState, Snapshot};
use crate::proto::{Answer, SnapshotExportArgs};
use crate::store;
use crate::sys::export_dest::{self, DestError, Destination};
use crate::sys::{landlock, qemu_img};

/// The journal's name for an export to a path in progress (its temporary file).
pub const EXPORT_INTENT: &str = "snapshot.export";

/// Bytes copied per step of a raw export to a file (between cancellation checks).
const CHUNK: usize = 8 << 20;

/// The snapshots being exported or sent, with how many exports and sends each.
#[derive(Debug, Default)]
pub struct Holds {
    map: Mutex<BTreeMap<String, usize>>,
}

/// One export's hold on its snapshot; released when dropped.
#[derive(Debug)]
pub struct Hold {
    holds: Arc<Holds>,
    id: String,
}

impl Holds {
    pub(super) fn take(self: &Arc<Self>, id: &str) -> Hold {
        *self
            .map
            .lock()
            .expect("export holds")
            .entry(id.to_string())
            .or_default() += 1;
        Hold {
            holds: self.clone(),
            id: id.to_string(),
        }
    }

    /// `busy` while the snapshot is being exported or sent (the caller holds its share's
    /// lock).
    pub fn refuse_if_held(&self, snap: &Snapshot) -> Result<()> {
        match self.map.lock().expect("export holds").get(&snap.id) {
            Some(n) if *n > 0 => Err(Error::Busy(format!(
                "snapshot {} is being exported or sent ({n} export(s) or send stream(s)); \
                 cancel or finish them first",
                snap.name
            ))),
            _ => Ok(()),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut m = self.holds.map.lock().expect("export holds");
        if let Some(n) = m.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

/// The image formats an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    Qcow2,
}

impl Format {
    fn parse(f: Option<&str>) -> Result<Format> {
        match f {
            None | Some("raw") => Ok(Format::Raw),
            Some("qcow2") => Ok(Format::Qcow2),
            Some(other) => Err(Error::Invalid(format!(
                "export format {:?} is not raw or qcow2",
                other.chars().take(16).collect::<String>()
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// A file read in order for a stream, holes answered as zeros without reading the disk;
/// a staging file is removed when the source is dropped.
struct FileSource {
    file: File,
    pos: u64,
    size: u64,
    /// The stretch `pos` is in: (hole, end).
    segment: (bool, u64),
    staging: Option<PathBuf>,
    _hold: Hold,
}

impl StreamSource for FileSource {
    fn read(&mut self, max: usize) -> Result<Vec<u8>> {
        if self.pos >= self.size {
            return Ok(Vec::new());
        }
        if self.pos >= self.segment.1 {
            self.segment = export_dest::segment_at(&self.file, self.pos, self.size)
                .map_err(|e| Error::io("finding the snapshot's data", e))?;
        }
        let n = (self.segment.1 - self.pos).min(max as u64) as usize;
        let mut buf = vec![0u8; n];
        if !self.segment.0 {
            self.file
                .read_exact_at(&mut buf, self.pos)
                .map_err(|e| Error::io("reading the snapshot", e))?;
        }
        self.pos += n as u64;
        Ok(buf)
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        if let Some(p) = self.staging.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Copy `src` (`size` bytes) into the empty file `dst`, leaving holes where `src` has
/// holes (only its data ranges are copied, in the kernel: reflinked where the
/// filesystem can); counts progress and stops when cancelled.
fn copy_sparse(src: &File, dst: &File, size: u64, job: &JobHandle) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let (hole, end) = export_dest::segment_at(src, pos, size)
            .map_err(|e| Error::io("finding the snapshot's data", e))?;
        if hole {
            job.add_done(end - pos);
            pos = end;
            continue;
        }
        while pos < end {
            if job.is_cancelled() {
                return Err(Error::Busy("cancelled".into()));
            }
            let want = ((end - pos) as usize).min(CHUNK);
            let n = export_dest::copy_range(src, dst, pos, want, &mut buf)
                .map_err(|e| Error::io("copying the snapshot into the export", e))?;
            if n == 0 {
                return Err(Error::Internal(format!(
                    "the snapshot ended at {pos}, before its size {size}"
                )));
            }
            super::failpoint::hit("snapshot.export.after_write");
            pos += n as u64;
            job.add_done(n as u64);
        }
    }
    dst.set_len(size)
        .map_err(|e| Error::io("sizing the export", e))
}

fn dest_error(path: &str, e: DestError) -> Error {
    match e {
        DestError::Exists(_) => Error::AlreadyExists(format!("export path {path}: {e}")),
        DestError::Io(io) => Error::io(format!("export path {path}"), io),
        e => Error::Invalid(format!("export path {path}: {e}")),
    }
}

/// Run `qemu-img convert -f raw -O qcow2` from `src` into `out` (at `out_path`), confined;
/// stops when the job is cancelled (when there is one).
async fn convert(
    runner: &crate::sys::cmd::Runner,
    src: &Arc<File>,
    out: &Arc<File>,
    out_path: &Path,
    ctx: Option<&JobCtx>,
    size: u64,
) -> Result<()> {
    let (s, o, p) = (src.clone(), out.clone(), out_path.to_path_buf());
    let cmd = blocking(move || qemu_img::export_command(&s, "qcow2", &o, &p))
        .await
        .map_err(|e| Error::Unsupported(format!("cannot confine qemu-img with Landlock: {e}")))?;
    let c = ctx.cloned();
    let run = qemu_img::convert(runner, &cmd, move |pct| {
        if let Some(c) = &c {
            c.progress((pct / 100.0 * size as f64) as u64);
        }
    });
    let Some(ctx) = ctx else {
        return run.await.map(drop).map_err(Error::from);
    };
    let finished = futures_lite::future::or(async { Some(run.await) }, async {
        ctx.cancellation().await;
        None
    })
    .await;
    match finished {
        Some(r) => r.map(drop).map_err(Error::from),
        None => ctx.checkpoint(),
    }
}

impl Engine {
    /// `snapshot.export`: to `path` (a job), or as a stream read with `stream.read`.
    pub(super) async fn export_snapshot(&self, a: SnapshotExportArgs) -> Result<Answer> {
        let format = Format::parse(a.format.as_deref())?;
        let dest = match &a.path {
            None => None,
            Some(p) => {
                if self.images.export_dirs.is_empty() {
                    return Err(Error::Unsupported(
                        "snapshot.export to a path: no export directories are configured \
                         ([images] export_dirs); read the export over the socket instead"
                            .into(),
                    ));
                }
                let (dir, rel) = export_dest::split_path(&self.images.export_dirs, Path::new(p))
                    .map_err(|e| dest_error(p, e))?;
                Some((dir.to_path_buf(), rel))
            }
        };
        if format == Format::Qcow2 && landlock::abi_version().is_none() {
            return Err(Error::Unsupported(
                "a qcow2 export needs Landlock to confine qemu-img, and this kernel has none"
                    .into(),
            ));
        }
        let (snap, file, hold) = self.open_for_export(&a).await?;
        let pool = self.pool(&snap.pool)?;
        match dest {
            Some((dir, rel)) => {
                let path = a.path.clone().unwrap_or_default();
                self.export_to_path(snap, file, hold, format, (dir, rel, path))
                    .await
            }
            None if format == Format::Raw => {
                let size = snap.size;
                let src = FileSource {
                    file,
                    pos: 0,
                    size,
                    segment: (false, 0),
                    staging: None,
                    _hold: hold,
                };
                let target = format!("{}@{} (raw stream)", snap.share_name, snap.name);
                let (stream, job) = self
                    .streams
                    .open("snapshot.export", &target, Some(size), Box::new(src))
                    .await?;
                Ok(Answer::stream_opened(
                    &stream,
                    &job,
                    vec![("size", Value::Integer(size.into()))],
                ))
            }
            None => {
                let dir = pool.images_dir().ok_or_else(|| {
                    Error::Unsupported(format!("pool {} has no staging directory", pool.name()))
                })?;
                self.export_qcow2_stream(snap, file, hold, dir).await
            }
        }
    }

    /// Resolve the snapshot, check it is available and hold it (under its share's lock, so
    /// no delete is half-way), and open its data.
    async fn open_for_export(&self, a: &SnapshotExportArgs) -> Result<(Snapshot, File, Hold)> {
        let (r, sh, p) = (a.snapshot.clone(), a.share.clone(), a.pool.clone());
        let found = self
            .store
            .call(move |c| store::find_snapshot(c, &r, sh.as_deref(), p.as_deref()))
            .await?;
        let _g = self.locks.lock(&found.share).await;
        let sid = found.id.clone();
        let snap = self
            .store
            .call(move |c| {
                store::get_snapshot(c, &sid)?
                    .ok_or_else(|| Error::NotFound(format!("snapshot {sid} was deleted meanwhile")))
            })
            .await?;
        if snap.state != ShareState::Available {
            return Err(Error::Busy(format!(
                "snapshot {} is {}",
                snap.name,
                snap.state.as_str()
            )));
        }
        let pool = self.pool(&snap.pool)?;
        let id = snap.id.clone();
        let file = blocking(move || pool.open_snapshot_read(&id)).await?;
        let hold = self.exporting.take(&snap.id);
        Ok((snap, file, hold))
    }

    /// A qcow2 stream: convert into a staging file first (the reply waits for it), then
    /// stream that file, which goes when the stream ends.
    async fn export_qcow2_stream(
        &self,
        snap: Snapshot,
        file: File,
        hold: Hold,
        dir: PathBuf,
    ) -> Result<Answer> {
        let staging = dir.join(format!(".export-{}", uuid::Uuid::new_v4()));
        let s = staging.clone();
        let out = blocking(move || crate::sys::fs::create_new(&s, 0o600))
            .await
            .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
        let (src, out) = (Arc::new(file), Arc::new(out));
        let made = convert(&self.runner, &src, &out, &staging, None, snap.size).await;
        let reopened = match made {
            Ok(()) => {
                let s = staging.clone();
                blocking(move || File::open(s))
                    .await
                    .map_err(|e| Error::io("reopening the staged export", e))
            }
            Err(e) => Err(e),
        };
        let staged = match reopened.and_then(|f| {
            let len = f
                .metadata()
                .map_err(|e| Error::io("reading the staged export", e))?
                .len();
            Ok((f, len))
        }) {
            Ok(s) => s,
            Err(e) => {
                let s = staging.clone();
                blocking(move || std::fs::remove_file(s)).await.ok();
                return Err(e);
            }
        };
        let (f, size) = staged;
        let src = FileSource {
            file: f,
            pos: 0,
            size,
            segment: (false, 0),
            staging: Some(staging),
            _hold: hold,
        };
        let target = format!("{}@{} (qcow2 stream)", snap.share_name, snap.name);
        let (stream, job) = self
            .streams
            .open("snapshot.export", &target, Some(size), Box::new(src))
            .await?;
        Ok(Answer::stream_opened(
            &stream,
            &job,
            vec![("size", Value::Integer(size.into()))],
        ))
    }

    /// An export to a file beneath an export directory, as a job.
    async fn export_to_path(
        &self,
        snap: Snapshot,
        file: File,
        hold: Hold,
        format: Format,
        (dir, rel, path): (PathBuf, PathBuf, String),
    ) -> Result<Answer> {
        let id = uuid::Uuid::new_v4().to_string();
        let (d, r, i) = (dir.clone(), rel.clone(), id.clone());
        let dest = blocking(move || export_dest::create(&d, &r, &i))
            .await
            .map_err(|e| dest_error(&path, e))?;
        let data = serde_json::json!({
            "dir": dir.display().to_string(),
            "tmp": dest.tmp_rel.display().to_string(),
        });
        let sid = snap.id.clone();
        let intent = self
            .store
            .write(move |c| store::insert_intent(c, EXPORT_INTENT, &sid, &data))
            .await;
        let intent = match intent {
            Ok(i) => i,
            Err(e) => {
                blocking(move || dest.discard()).await;
                return Err(e);
            }
        };
        let job = PathExport {
            store: self.store.clone(),
            runner: self.runner.clone(),
            src: Arc::new(file),
            dest: Arc::new(dest),
            size: snap.size,
            format,
            intent,
            path: path.clone(),
            _hold: hold,
        };
        let target = format!("{}@{} to {path}", snap.share_name, snap.name);
        let started = self
            .jobs
            .start(
                &self.store,
                &self.events,
                "snapshot.export",
                &target,
                move |ctx| job.run(ctx),
            )
            .await?;
        Answer::read(&crate::engine::map(vec![
            ("job", Value::Text(started)),
            ("path", Value::Text(path)),
            ("size", Value::Integer(snap.size.into())),
        ]))
        .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Recovery: remove the temporary file an interrupted export to a path left.
    pub(super) async fn recover_export(&self, intent: &store::Intent) -> Result<String> {
        let dir = intent.data["dir"].as_str().unwrap_or_default().to_string();
        let tmp = intent.data["tmp"].as_str().unwrap_or_default().to_string();
        if !self
            .images
            .export_dirs
            .iter()
            .any(|d| d.as_os_str() == dir.as_str())
        {
            return Ok(format!(
                "export of snapshot {} into {dir} was interrupted; that directory is no longer an export directory: {tmp} left there",
                intent.object
            ));
        }
        let (d, t) = (PathBuf::from(&dir), PathBuf::from(&tmp));
        let removed = blocking(move || export_dest::remove_leftover(&d, &t))
            .await
            .map_err(|e| Error::io(format!("removing {dir}/{tmp}"), e))?;
        Ok(format!(
            "export of snapshot {} was interrupted: {}",
            intent.object,
            if removed {
                format!("its partial file {dir}/{tmp} removed")
            } else {
                "it had left nothing".into()
            }
        ))
    }
}

/// What an export to a path needs, owned, for its job.
struct PathExport {
    store: store::Store,
    runner: crate::sys::cmd::Runner,
    src: Arc<File>,
    dest: Arc<Destination>,
    size: u64,
    format: Format,
    intent: i64,
    path: String,
    _hold: Hold,
}

impl PathExport {
    async fn run(self, ctx: JobCtx) -> Result<Value> {
        ctx.set_total(self.size);
        let done = self.steps(&ctx).await;
        if done.is_err() {
            let d = self.dest.clone();
            blocking(move || d.discard()).await;
        }
        let id = self.intent;
        if let Err(e) = self.store.write(move |c| store::delete_intent(c, id)).await {
            log::error!("export to {}: cannot forget its intent: {e}", self.path);
        }
        done
    }

    async fn steps(&self, ctx: &JobCtx) -> Result<Value> {
        match self.format {
            Format::Raw => {
                let (s, d, h, n) = (
                    self.src.clone(),
                    self.dest.clone(),
                    ctx.counters(),
                    self.size,
                );
                blocking(move || copy_sparse(&s, &d.file, n, &h)).await?;
            }
            Format::Qcow2 => {
                let out = Arc::new(
                    self.dest
                        .file
                        .try_clone()
                        .map_err(|e| Error::io("duplicating the export", e))?,
                );
                convert(
                    &self.runner,
                    &self.src,
                    &out,
                    &self.dest.tmp_path,
                    Some(ctx),
                    self.size,
                )
                .await?;
            }
        }
        ctx.checkpoint()?;
        let d = self.dest.clone();
        let written = blocking(move || -> Result<u64> {
            d.commit().map_err(|e| match e {
                DestError::Exists(_) => {
                    Error::AlreadyExists("a file appeared at the export path meanwhile".into())
                }
                e => Error::Internal(format!("committing the export: {e}")),
            })?;
            d.file
                .metadata()
                .map(|m| m.len())
                .map_err(|e| Error::io("reading the export's size", e))
        })
        .await?;
        log::info!(
            "snapshot exported to {} ({}, {written} bytes)",
            self.path,
            self.format.as_str()
        );
        Ok(crate::engine::map(vec![
            ("path", Value::Text(self.path.clone())),
            ("format", Value::Text(self.format.as_str().into())),
            ("size", Value::Integer(written.into())),
        ]))
    }
}
