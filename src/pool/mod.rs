//! Carving volumes out of pools.
//!
//! A [`Pool`] creates, snapshots, clones, grows and removes volumes, and reports usage. Its
//! methods block (file-system calls, or commands for later kinds) and are called off the
//! event loop. Every volume carries its own identity on disk, so the database can be
//! rebuilt from the pools.

mod file;
pub mod format;
mod lvm;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use file::FilePool;
pub use lvm::{LvmPool, LvmSettings};

use crate::error::Result;
use crate::model::{PoolKind, Protocol, Share, Snapshot};
use crate::sys::fs::FsUsage;

/// What a pool found on disk: one volume or snapshot and the identity it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDisk {
    /// `share` or `snapshot`.
    pub kind: String,
    /// The id in its path.
    pub id: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes, when the pool knows it without opening `path` (an LVM pool's
    /// inactive snapshots have no device node).
    pub size: Option<u64>,
    /// The `trusted.shelf.*` attributes (LVM: tags) it carries.
    pub identity: BTreeMap<String, String>,
    /// Why what is at `path` is not the file shelf made (a symbolic link, a hard link, a
    /// FIFO, a directory, a file without its identity: planted through the share's NFS
    /// export); `None` when it is. A tampered object's identity is left empty.
    pub tampered: Option<Tamper>,
}

/// What a pool's volumes really take on its storage, from one pass over them
/// ([`Pool::allocation`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// The pool's allocated bytes (what is counted is the pool kind's: see
    /// [`Pool::allocation`]).
    pub total: u64,
    /// The allocated bytes of each share's volume, by share id.
    pub shares: BTreeMap<String, u64>,
}

/// Where an interrupted `share.revert` stands on disk ([`Pool::revert_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevertState {
    /// Undo by [`Pool::revert_discard`]: a staged volume is there and the volume is the old
    /// one (or, on an LVM pool, the old volume was set aside with nothing staged beside it:
    /// the discard puts it back).
    Staged,
    /// The swap was cut between its steps (an LVM pool's two renames: the old volume is set
    /// aside, the staged one not yet in its place): finish with [`Pool::revert_swap`].
    Swapping,
    /// The volume is the reverted one (it carries the revert's tag): finish (re-open the
    /// exports, then [`Pool::revert_finish`]).
    Swapped,
    /// Neither: nothing was staged, the volume is the old one.
    Untouched,
}

/// A snapshot opened for `snapshot.send`, with its extent map.
#[derive(Debug)]
pub struct SnapshotExtents {
    /// The snapshot's file, read-only (checked like every open).
    pub file: std::fs::File,
    /// Its allocated ranges, sorted.
    pub map: Vec<crate::sys::fiemap::Mapped>,
}

/// What a send stream of a snapshot carries, as its pool found it ([`Pool::send_plan`]).
#[derive(Debug)]
pub struct SendPlan {
    /// The snapshot's data, read-only.
    pub file: std::fs::File,
    /// What the stream carries: the snapshot's data extents (a full stream), or what
    /// changed since the base (data, and holes where the base had data), sorted, at most
    /// [`crate::replication::format::MAX_EXTENTS`].
    pub extents: Vec<crate::replication::format::Extent>,
}

/// What is wrong with an object at a volume's or snapshot's path.
#[derive(Debug, Clone, PartialEq)]
pub struct Tamper {
    /// What it is instead, for people.
    pub why: String,
    /// Only that it is a plain file without any identity (with no row in the database,
    /// that is an orphan left by a crash, not a planted object).
    pub unidentified: bool,
    /// For an unidentified file, the `user.shelf.*` attributes it carries: the stamp of a
    /// shelf before the `trusted.shelf.*` one, or a tenant's forgery (the two look alike).
    /// `shelfd recover --rebuild-db` adopts them only with `--trust-user-xattrs`.
    pub legacy: BTreeMap<String, String>,
}

/// A pool of volumes.
pub trait Pool: Send + Sync + std::fmt::Debug {
    /// The pool's name.
    fn name(&self) -> &str;
    /// Its kind.
    fn kind(&self) -> PoolKind;
    /// Where it lives (directory for file pools).
    fn location(&self) -> String;
    /// Whether snapshots and clones are reflinks (instant) rather than copies.
    fn reflink(&self) -> bool;
    /// Make the pool ready: directories, capability probes.
    fn prepare(&mut self) -> Result<()>;
    /// Make the share's volume, sized and stamped with its identity.
    fn create_volume(&self, share: &Share) -> Result<()>;
    /// Freeze the share's volume into the snapshot.
    fn snapshot(&self, share: &Share, snap: &Snapshot) -> Result<()>;
    /// Make `share`'s volume from the snapshot; independent of it afterwards.
    fn clone_volume(&self, snap: &Snapshot, share: &Share) -> Result<()>;
    /// Grow the share's volume to `size` bytes.
    fn grow(&self, share: &Share, size: u64) -> Result<()>;
    /// Rewrite the identity a share's volume carries (after a metadata change).
    fn stamp(&self, share: &Share) -> Result<()>;
    /// Record the share's exports and attachments on its volume (`trusted.shelf.exports`), so
    /// `shelfd recover --rebuild-db` can bring them back.
    fn stamp_exports(&self, share_id: &str, json: &str) -> Result<()>;
    /// Remove a share's volume; succeeds when it is already gone.
    fn remove_volume(&self, share_id: &str) -> Result<()>;
    /// Remove a snapshot; succeeds when it is already gone.
    fn remove_snapshot(&self, snap_id: &str) -> Result<()>;
    /// `share.revert`, first step: make, beside the share's volume, a new volume with the
    /// snapshot's content at the share's size, stamped with the share's identity (its
    /// exports record carried over) and with `revert` = `tag`, and make it durable. The
    /// volume itself is not touched. A leftover of an earlier attempt is replaced.
    fn revert_stage(&self, share: &Share, snap: &Snapshot, tag: &str) -> Result<()> {
        let _ = (snap, tag);
        Err(crate::error::Error::Unsupported(format!(
            "pool {} cannot revert shares",
            share.pool
        )))
    }
    /// `share.revert`, second step: put the staged volume in the volume's place in one
    /// atomic step where the pool can (a file pool's rename; an LVM pool renames twice, and
    /// [`Pool::revert_state`] tells the step between apart, see [`RevertState::Swapping`]).
    /// Resumes a swap cut between its steps. Errors when nothing is staged.
    fn revert_swap(&self, share: &Share) -> Result<()> {
        Err(crate::error::Error::Unsupported(format!(
            "pool {} cannot revert shares",
            share.pool
        )))
    }
    /// `share.revert`, last step, once the exports hold the new volume: remove what the
    /// swap set aside (an LVM pool's old LV, which an export kept open until re-opened).
    /// Succeeds when there is nothing.
    fn revert_finish(&self, share_id: &str) -> Result<()> {
        let _ = share_id;
        Ok(())
    }
    /// Where an interrupted revert stands (start-up recovery reads it).
    fn revert_state(&self, share_id: &str, tag: &str) -> Result<RevertState> {
        let _ = (share_id, tag);
        Ok(RevertState::Untouched)
    }
    /// Undo a revert before its swap finished: remove the staged volume and put a volume
    /// set aside back (succeeds when there is nothing).
    fn revert_discard(&self, share_id: &str) -> Result<()> {
        let _ = share_id;
        Ok(())
    }
    /// Whether taking a snapshot freezes a mounted filesystem on the volume by itself (a
    /// device-mapper suspend does); otherwise shelfd freezes it around the snapshot.
    fn snapshot_freezes(&self) -> bool {
        false
    }
    /// Open snapshot `snap_id`'s data for reading (`snapshot.export`), refusing anything
    /// but what shelf made; `unsupported` for a kind of pool that cannot.
    fn open_snapshot_read(&self, snap_id: &str) -> Result<std::fs::File> {
        let _ = snap_id;
        Err(crate::error::Error::Unsupported(format!(
            "pool {} cannot export snapshots (only file pools can, for now)",
            self.name()
        )))
    }
    /// Where cached base images live (`None`: this kind of pool has no image cache).
    fn images_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Make `share`'s volume from a cached raw image (a reflink where possible), grown to
    /// the share's size.
    fn create_from_image(&self, _image: &std::path::Path, share: &Share) -> Result<()> {
        Err(crate::error::Error::Unsupported(format!(
            "pool {} has no image cache",
            share.pool
        )))
    }
    /// The path a client of the appliance uses for the share's data (the volume file).
    fn volume_path(&self, share_id: &str) -> PathBuf;
    /// The directory exported over NFS for the share (it holds the volume file).
    fn export_dir(&self, share_id: &str) -> PathBuf;
    /// Size, free and used bytes of the pool's storage.
    fn usage(&self) -> Result<FsUsage>;
    /// What the pool's volumes really take, in one pass: a file pool stats every share
    /// volume and snapshot file (O(objects); `st_blocks` × 512, so an extent that reflinks
    /// share counts once per file holding it); an LVM pool reads one `lvs` (the thin pool's
    /// data in use, shared blocks counted once). Blocks; the engine caches the result.
    fn allocation(&self) -> Result<Allocation>;
    /// The bytes really allocated to one share's volume when the pool can tell without a
    /// command or a scan (a file's `st_blocks` × 512); `None` when it cannot (then
    /// [`Pool::allocation`]'s figure is used) or the volume is not there.
    fn volume_allocated(&self, share_id: &str) -> Result<Option<u64>> {
        let _ = share_id;
        Ok(None)
    }
    /// [`Pool::volume_allocated`] when it can be read without blocking (from what the
    /// kernel holds in memory, no disk read, no command): called on the event loop. `None`
    /// when it cannot be told so; then [`Pool::volume_allocated`] is asked off the loop.
    fn volume_allocated_cached(&self, share_id: &str) -> Option<Result<Option<u64>>> {
        let _ = share_id;
        None
    }
    /// The figures a capacity decision uses, or `no_space` when the pool's own limits refuse
    /// new work now (an LVM thin pool's data or metadata at its threshold).
    fn admit(&self) -> Result<FsUsage> {
        self.usage()
    }
    /// Whether [`Pool::admit`] is one system call on a local filesystem (a file pool's
    /// `statvfs`), cheap enough to run on the database thread inside the transaction
    /// that records the request, which saves the request a hand-over to the blocking
    /// pool and back. `false` where it runs a command (`lvs`): that must never hold up
    /// the database thread.
    fn admit_is_cheap(&self) -> bool {
        false
    }
    /// Whether the share's volumes can be exported over `protocol` (`unsupported` if not).
    fn check_export(&self, protocol: Protocol) -> Result<()> {
        let _ = protocol;
        Ok(())
    }
    /// Every volume and snapshot on disk, with the identity each carries.
    fn scan(&self) -> Result<Vec<OnDisk>>;
    /// `snapshot.send`: snapshot `snap_id`'s first `size` bytes, opened for reading, and
    /// its extent map (at most `max` extents), for the default [`Pool::send_plan`].
    /// `unsupported` where the pool cannot map extents (an LVM pool overrides
    /// [`Pool::send_plan`] instead: docs/replication.md §5).
    fn snapshot_extents(&self, snap_id: &str, size: u64, max: usize) -> Result<SnapshotExtents> {
        let _ = (snap_id, size, max);
        Err(crate::error::Error::Unsupported(format!(
            "pool {} cannot map a snapshot's extents, so it cannot send (docs/replication.md)",
            self.name()
        )))
    }
    /// `snapshot.send`: snapshot `snap` opened for reading, and the extents a stream of it
    /// carries over `base` (an older snapshot of the same share; `None`: a full stream),
    /// each snapshot's map at most `max` extents. Computed from what the pool already
    /// knows, never by reading data. By default from the two maps of
    /// [`Pool::snapshot_extents`] ([`crate::replication::diff::changed_extents`]); an
    /// LVM pool asks the thin pool's metadata (`thin_delta`). Once the stream is over,
    /// the engine calls [`Pool::send_done`].
    fn send_plan(&self, snap: &Snapshot, base: Option<&Snapshot>, max: usize) -> Result<SendPlan> {
        use crate::replication::diff::changed_extents;
        let new = self.snapshot_extents(&snap.id, snap.size, max)?;
        let (base_map, base_size) = match base {
            Some(b) => (self.snapshot_extents(&b.id, b.size, max)?.map, b.size),
            None => (Vec::new(), 0),
        };
        let extents = changed_extents(&base_map, base_size, &new.map, snap.size);
        Ok(SendPlan {
            file: new.file,
            extents,
        })
    }
    /// A send of snapshot `snap_id` is over and its [`SendPlan::file`] closed: release what
    /// [`Pool::send_plan`] took for it (an LVM pool deactivates the snapshot's LV once no
    /// send reads it). Never fails: what it cannot do is logged.
    fn send_done(&self, snap_id: &str) {
        let _ = snap_id;
    }
    /// `snapshot.receive`: make `len` bytes at `offset` of a staging file read as zeros
    /// (a hole of the stream), taking no space where the pool can: a file pool punches a
    /// hole.
    fn punch_staging(&self, file: &std::fs::File, offset: u64, len: u64) -> Result<()> {
        crate::sys::fs::punch_hole(file, offset, len)
            .map_err(|e| crate::error::Error::io("punching a hole of a received stream", e))
    }
    /// `snapshot.receive`: make the staging file of receive `receive_id`, `size` bytes, a
    /// reflink of snapshot `base` when given (an incremental) or empty and sparse.
    fn create_staging(
        &self,
        receive_id: &str,
        base: Option<&str>,
        size: u64,
    ) -> Result<std::fs::File> {
        let _ = (receive_id, base, size);
        Err(crate::error::Error::Unsupported(format!(
            "pool {} cannot receive snapshots (docs/replication.md)",
            self.name()
        )))
    }
    /// Turn receive `receive_id`'s complete staging file into snapshot `snap` (moved into
    /// place, stamped, synced).
    fn adopt_staging(&self, receive_id: &str, snap: &Snapshot) -> Result<()> {
        let _ = (receive_id, snap);
        Err(crate::error::Error::Unsupported("no staging here".into()))
    }
    /// Remove receive `receive_id`'s staging file (succeeds when it is gone); `None` for
    /// every staging file (start-up: receives do not outlive a run). Returns how many went.
    fn remove_staging(&self, receive_id: Option<&str>) -> Result<usize> {
        let _ = receive_id;
        Ok(0)
    }
    /// Make `share`'s existing volume hold snapshot `snap`'s content (a reflink of it, cut
    /// or grown to `share.size`), restamped.
    fn volume_from_snapshot(&self, snap: &Snapshot, share: &Share) -> Result<()> {
        let _ = (snap, share);
        Err(crate::error::Error::Unsupported("no receive here".into()))
    }
    /// Whether the file of share or snapshot `id` (`kind` "share" or "snapshot") carries
    /// any `user.shelf.*` attribute, for [`Pool::move_legacy_stamp`] to move or remove.
    fn has_legacy_stamp(&self, kind: &str, id: &str) -> bool {
        let _ = (kind, id);
        false
    }
    /// Move the stamp of share or snapshot `id` (`kind` "share" or "snapshot") that a shelf
    /// before the `trusted.shelf.*` stamp wrote in `user.shelf.*`: write `attrs` (the
    /// database's view of it, never the `user.*` values, which a tenant may have forged),
    /// then remove `user.shelf.*`. Returns a line for the recovery log when it did or
    /// refused something; `None` when there was nothing to move. Only pools whose volumes
    /// tenants can reach carry such a stamp.
    fn move_legacy_stamp(
        &self,
        kind: &str,
        id: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        let _ = (kind, id, attrs);
        Ok(None)
    }
}

/// The identity attributes of a share, as stamped on its volume.
pub fn share_identity(s: &Share) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("kind".into(), "share".into());
    m.insert("id".into(), s.id.clone());
    m.insert("name".into(), s.name.clone());
    m.insert("pool".into(), s.pool.clone());
    m.insert("size".into(), s.size.to_string());
    m.insert("sparse".into(), s.sparse.to_string());
    m.insert("multiattach".into(), s.multiattach.to_string());
    m.insert("created_at".into(), s.created_at.to_string());
    m.insert(
        "origin_snapshot".into(),
        s.origin_snapshot.clone().unwrap_or_default(),
    );
    m.insert(
        "origin_share".into(),
        s.origin_share.clone().unwrap_or_default(),
    );
    m.insert(
        "metadata".into(),
        serde_json::to_string(&s.metadata).expect("a string map serialises"),
    );
    m.insert("layout".into(), s.layout.as_str().into());
    m.insert(
        "filesystem".into(),
        s.filesystem.map(|f| f.as_str()).unwrap_or_default().into(),
    );
    m
}

/// The identity attributes of a snapshot.
pub fn snapshot_identity(s: &Snapshot) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("kind".into(), "snapshot".into());
    m.insert("id".into(), s.id.clone());
    m.insert("name".into(), s.name.clone());
    m.insert("share".into(), s.share.clone());
    m.insert("share_name".into(), s.share_name.clone());
    m.insert("pool".into(), s.pool.clone());
    m.insert("size".into(), s.size.to_string());
    m.insert("created_at".into(), s.created_at.to_string());
    if let Some(g) = &s.group {
        // The group, so `--rebuild-db` brings it back: a member has its group's name and
        // creation time, stamped as the group's own all the same.
        m.insert("group".into(), g.clone());
        m.insert("group_name".into(), s.name.clone());
        m.insert("group_created_at".into(), s.created_at.to_string());
    }
    m
}
