//! Exporting shares: an [`Exporter`] per driver makes the target daemons match the tree,
//! and a [`protocol::ProtocolHandler`] per protocol knows what the engine must not: how an
//! export is named, which clients and options it takes, what a connector must carry and the
//! `connection_info` an attach answers with. [`registry`] is the one table of both; the
//! engine journals, locks and calls through them (docs/exports.md, "Adding a driver").
//!
//! Exporters are idempotent: `apply` creates an export or brings an existing one in line
//! with its spec (ACL, LUN, options), `remove` succeeds when the export is already gone, and
//! `reconcile` compares a daemon's real state with every export the tree holds for it,
//! repairs the difference and reports it. Only objects carrying shelf's naming (our IQN
//! prefix, our exports file, our CHAP user prefix) are ever removed.

mod coalesce;
pub mod ganesha;
pub mod iscsi;
pub mod lio;
pub mod nfs;
pub mod nfs_kernel;
pub mod nvme;
pub mod nvmet;
pub mod protocol;
pub mod registry;
pub mod tgt;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::Serialize;

use crate::error::Result;
use crate::model::{Driver, Export, PoolKind};

/// What an iSCSI or NVMe export's `path` is, as the pool's kind decides (never guessed
/// from the path): a target treats a file and a block device differently (tgt punches
/// holes in a file; on a block device the same request is no discard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// A file (a `file` pool's volume).
    #[default]
    File,
    /// A block device (an `lvm` pool's thin LV).
    BlockDevice,
}

impl Backing {
    /// The backing of the volumes of a pool of `kind`.
    pub fn of(kind: PoolKind) -> Backing {
        match kind {
            PoolKind::File => Backing::File,
            PoolKind::Lvm => Backing::BlockDevice,
        }
    }
}

/// A boxed future, so exporters can be trait objects.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a driver needs to realise one export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSpec {
    /// The export as stored (options, target name, tid, fsid, attached clients).
    pub export: Export,
    /// NFS: the directory to export. iSCSI: the backing file or block device.
    pub path: PathBuf,
    /// iSCSI: the CHAP secret (never logged).
    pub chap_secret: Option<String>,
    /// The volume is thin (a sparse file, a thin LV: the share's `sparse`): blocks an
    /// initiator unmaps may be given back to the pool. `false` for a preallocated volume,
    /// whose blocks stay allocated whatever the initiator says (docs/exports.md, "Discard").
    pub thin: bool,
    /// Whether the volume at `path` is a file or a block device (from the pool's kind).
    pub backing: Backing,
}

/// One difference between the tree and a daemon, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The driver.
    pub driver: String,
    /// `missing` (in the tree, not in the daemon), `drifted` (both, but different),
    /// `orphan` (shelf's naming, not in the tree), `tampered` (the backing store is not
    /// the share's own volume; nothing was given to the daemon), or `unavailable`.
    pub kind: String,
    /// What it concerns (IQN, path, account).
    pub object: String,
    /// What was done (or why nothing was).
    pub action: String,
}

impl Finding {
    /// A finding.
    pub fn new(
        driver: Driver,
        kind: &str,
        object: impl Into<String>,
        action: impl Into<String>,
    ) -> Self {
        Finding {
            driver: driver.as_str().to_string(),
            kind: kind.to_string(),
            object: object.into(),
            action: action.into(),
        }
    }
}

/// A driver that serves exports.
pub trait Exporter: Send + Sync + std::fmt::Debug {
    /// Which driver this is.
    fn driver(&self) -> Driver;
    /// The path or name a client of `export` uses: the export's target, unless the driver
    /// serves it elsewhere (ganesha's NFSv4 pseudo path).
    fn client_path(&self, export: &Export) -> String {
        export.target.clone()
    }
    /// Whether the driver numbers its targets itself with shelf's allocated `tid` (tgt).
    fn wants_tid(&self) -> bool {
        false
    }
    /// Whether the export of `spec` really discards: its target advertises logical block
    /// provisioning (or NVMe deallocate) and an UNMAP gives the blocks back to the pool.
    /// An attach's `connection_info.data.discard` says exactly this. Never true for a
    /// preallocated volume (`spec.thin` false): unmapping would break its preallocation.
    fn discards(&self, spec: &ExportSpec) -> bool {
        let _ = spec;
        false
    }
    /// Whether the driver can serve the volume of `spec` and keep what the share promises;
    /// `unsupported` naming why not. The engine asks before anything is journaled or
    /// given to the daemon, on every path that creates an export.
    fn check_volume<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        let _ = spec;
        Box::pin(async { Ok(()) })
    }
    /// `Ok` when the tool and its daemon are usable; else `unsupported` (tool missing) or
    /// `busy` (daemon not running) naming what is missing.
    fn probe(&self) -> BoxFut<'_, Result<()>>;
    /// How the driver reaches its daemon, when it has more than one way and has chosen
    /// (tgt: `"socket"` or `"tgtadm"`); reported as `driver_transports`.
    fn transport(&self) -> Option<&'static str> {
        None
    }
    /// Learn the exports the tree holds for this driver, without touching the daemon. Called
    /// once at start-up before anything else, so drivers that rewrite a whole file never
    /// write one that lacks exports they have not been told about yet.
    fn load(&self, _specs: &[ExportSpec]) {}
    /// Create the export, or bring an existing one in line with `spec`.
    fn apply<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>>;
    /// Remove the export; succeeds when it is already gone.
    fn remove<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>>;
    /// The volume grew: make clients see the new size.
    fn refresh_size<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>>;
    /// The volume file was replaced (`share.revert` renamed a new one over it): make the
    /// daemon open the new file, where it holds the old one open. By default the same as
    /// [`Exporter::refresh_size`], which re-creates the LUN (tgt, LIO); NFS keeps its
    /// directory and needs nothing.
    fn reopen<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        self.refresh_size(spec)
    }
    /// Compare the daemon with `specs` (all of this driver's exports, as the tree has them)
    /// among the objects carrying shelf's naming and report each difference; with
    /// `repair`, also make the daemon hold exactly `specs`.
    fn reconcile<'a>(
        &'a self,
        specs: &'a [ExportSpec],
        repair: bool,
    ) -> BoxFut<'a, Result<Vec<Finding>>>;
}

/// The action a finding reports: what was done, or that nothing was (`verify`).
pub fn action(repair: bool, done: &str) -> String {
    if repair {
        done.to_string()
    } else {
        "not repaired (verify only)".to_string()
    }
}

/// Write `text` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over the target, fsync the directory. Readers see the old or the new file,
/// never a mix.
pub fn write_atomically(path: &std::path::Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("shelf"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = crate::sys::fs::create_new(&tmp, mode)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    crate::sys::fs::fsync_dir(dir)
}

/// Check an iSCSI export's backing store right before a daemon is given its path: it must
/// be what shelf made for the export's share ([`crate::sys::fs::check_backing_store`]),
/// never a symbolic link, hard link, FIFO or directory a client of the share's NFS export
/// planted there. `tampered` otherwise; a missing volume is `not_found`.
pub async fn check_backing_store(spec: &ExportSpec) -> Result<()> {
    use crate::error::Error;
    use crate::sys::fs::OpenError;
    let (path, share) = (spec.path.clone(), spec.export.share.clone());
    let checked = smol::unblock(move || crate::sys::fs::check_backing_store(&path, &share)).await;
    let path = spec.path.display();
    match checked {
        Ok(()) => Ok(()),
        Err(OpenError::Unidentified) => Err(Error::Tampered(format!(
            "share {}: the backing store {path} is not the volume shelf made: it carries no \
             shelf identity; it was replaced through the share's NFS export, and the target \
             daemon was not given it",
            spec.export.share_name
        ))),
        Err(OpenError::Tampered(why)) => Err(Error::Tampered(format!(
            "share {}: the backing store {path} is not the volume shelf made: {why}; it was \
             replaced through the share's NFS export, and the target daemon was not given it",
            spec.export.share_name
        ))),
        Err(OpenError::Missing(_)) => Err(Error::NotFound(format!(
            "share {}: its volume {path} is gone",
            spec.export.share_name
        ))),
        Err(OpenError::Io(e)) => Err(Error::io(format!("checking {path}"), e)),
    }
}
