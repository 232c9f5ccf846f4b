//! The file pool: a directory on a filesystem.
//!
//! Layout: `<pool>/shares/<share-id>/volume` (mode 0660), one volume file per share
//! directory, and `<pool>/snapshots/<snapshot-id>` (mode 0440). Sparse volumes are made with
//! ftruncate, preallocated ones with fallocate. Snapshots and clones are `FICLONE` reflinks
//! when the filesystem can, else sparse-aware copies. Every file carries `trusted.shelf.*`
//! xattrs describing itself (a namespace no NFS client can read or write), and every change is fsynced with its directory before the
//! call returns.
//!
//! A share's directory is what a Cinder NFS client mounts, so anything in it may have been
//! replaced by a tenant with root on their client (`root_squash: false`): a symbolic link,
//! a hard link, a FIFO, a directory, a file without its identity. Every operation on an
//! existing volume or snapshot therefore opens it with [`fs::open_checked`] (beneath the
//! pool directory, no symbolic link followed, a regular file with one link carrying its
//! own identity) and acts on that descriptor only; anything else is [`Error::Tampered`].

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{share_identity, snapshot_identity, OnDisk, Pool};
use crate::error::{Error, Result};
use crate::model::{PoolKind, Share, Snapshot};
use crate::sys::fs;

mod allocation;
mod objects;
mod replication;
mod revert;

use objects::{
    object_rel, open_error, remove_dir_if_present, remove_file_if_present, stamp_error, undo,
    write_identity,
};

/// A pool of sparse files in a directory.
#[derive(Debug)]
pub struct FilePool {
    name: String,
    root: PathBuf,
    reflink: bool,
    /// On a local filesystem ([`fs::is_local_fs`]): a volume's allocation may be read
    /// from the kernel's caches on the event loop ([`Pool::volume_allocated_cached`]).
    local: bool,
}

impl Pool for FilePool {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> PoolKind {
        PoolKind::File
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn reflink(&self) -> bool {
        self.reflink
    }

    fn prepare(&mut self) -> Result<()> {
        for dir in [
            self.root.clone(),
            self.root.join("shares"),
            self.root.join("snapshots"),
            self.root.join("images"),
            self.root.join("staging"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating pool directory {}", dir.display()), e))?;
        }
        fs::probe_stamp(&self.root).map_err(|e| {
            Error::io(
                format!(
                    "pool {}: cannot write trusted.shelf.* extended attributes in {} (shelfd \
                     needs CAP_SYS_ADMIN for them, and a filesystem that stores trusted.*)",
                    self.name,
                    self.root.display()
                ),
                e,
            )
        })?;
        self.reflink = fs::probe_reflink(&self.root);
        self.local = fs::is_local_fs(&self.root);
        if !self.reflink {
            log::warn!(
                "pool {}: {} cannot reflink; snapshots and clones will be full copies",
                self.name,
                self.root.display()
            );
        }
        Ok(())
    }

    fn create_volume(&self, share: &Share) -> Result<()> {
        let dir = self.share_dir(&share.id);
        std::fs::create_dir(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join("volume");
        let made = (|| -> Result<()> {
            let f = fs::create_new(&path, 0o660)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            if share.sparse {
                f.set_len(share.size)
                    .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
            } else {
                fs::preallocate(&f, 0, share.size).map_err(|e| {
                    Error::io(
                        format!(
                            "preallocating {} bytes for share {}",
                            share.size, share.name
                        ),
                        e,
                    )
                })?;
            }
            fs::set_identity_fd(&f, &share_identity(share)).map_err(|e| stamp_error(&path, e))?;
            f.sync_all()
                .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
            fs::fsync_dir(&dir).map_err(|e| Error::io("syncing share directory", e))?;
            fs::fsync_dir(dir.parent().expect("share dir has a parent"))
                .map_err(|e| Error::io("syncing shares directory", e))
        })();
        made.map_err(|cause| undo(cause, || remove_dir_if_present(&dir), "the partial volume"))
    }

    fn snapshot(&self, share: &Share, snap: &Snapshot) -> Result<()> {
        let src = self.open_volume(&share.id, false)?;
        let dst_path = self.snapshot_file(&snap.id);
        let snapshots = fs::open_dir(&self.root.join("snapshots"))
            .map_err(|e| Error::io("opening the snapshots directory", e))?;
        let made = (|| -> Result<()> {
            let dst = fs::create_new_at(&snapshots, Path::new(&snap.id), 0o440)
                .map_err(|e| Error::io(format!("creating {}", dst_path.display()), e))?;
            self.copy_blocks(
                &src,
                &dst,
                &format!("share {} into snapshot {}", share.name, snap.name),
            )?;
            dst.set_len(snap.size)
                .map_err(|e| Error::io(format!("sizing {}", dst_path.display()), e))?;
            fs::set_identity_fd(&dst, &snapshot_identity(snap))
                .map_err(|e| stamp_error(&dst_path, e))?;
            dst.sync_all()
                .map_err(|e| Error::io("syncing the snapshot", e))?;
            fs::fsync_dir(&self.root.join("snapshots"))
                .map_err(|e| Error::io("syncing snapshots directory", e))
        })();
        made.map_err(|cause| {
            undo(
                cause,
                || remove_file_if_present(&dst_path),
                "the partial snapshot",
            )
        })
    }

    fn clone_volume(&self, snap: &Snapshot, share: &Share) -> Result<()> {
        let src = self.open_snapshot(&snap.id)?;
        self.volume_from_file(
            &src,
            share,
            &format!("snapshot {} into share {}", snap.name, share.name),
        )
    }

    fn open_snapshot_read(&self, snap_id: &str) -> Result<File> {
        self.open_snapshot(snap_id)
    }

    fn images_dir(&self) -> Option<PathBuf> {
        Some(self.root.join("images"))
    }

    fn revert_stage(&self, share: &Share, snap: &Snapshot, tag: &str) -> Result<()> {
        self.stage_revert(share, snap, tag)
    }

    fn revert_swap(&self, share: &Share) -> Result<()> {
        self.swap_revert(share)
    }

    fn revert_state(&self, share_id: &str, tag: &str) -> Result<super::RevertState> {
        self.revert_state_of(share_id, tag)
    }

    fn revert_discard(&self, share_id: &str) -> Result<()> {
        self.discard_revert(share_id)
    }

    fn create_from_image(&self, image: &Path, share: &Share) -> Result<()> {
        let src =
            File::open(image).map_err(|e| Error::io(format!("opening {}", image.display()), e))?;
        self.volume_from_file(&src, share, &format!("image into share {}", share.name))
    }

    fn grow(&self, share: &Share, size: u64) -> Result<()> {
        let path = self.volume_path(&share.id);
        let f = self.open_volume(&share.id, true)?;
        let old = f
            .metadata()
            .map_err(|e| Error::io("reading volume size", e))?
            .len();
        let mut grown = share.clone();
        grown.size = size;
        let result = (|| -> Result<()> {
            if size > old {
                if share.sparse {
                    f.set_len(size)
                } else {
                    fs::preallocate(&f, old, size - old)
                }
                .map_err(|e| {
                    Error::io(format!("growing share {} to {size} bytes", share.name), e)
                })?;
            }
            fs::set_identity_fd(&f, &share_identity(&grown)).map_err(|e| stamp_error(&path, e))?;
            f.sync_all()
                .map_err(|e| Error::io("syncing the grown volume", e))
        })();
        // A grow that failed (a full filesystem part-way through a preallocation, which can
        // leave the file longer or blocks reserved past its end) leaves the volume at its
        // old length: truncating gives the blocks back, and nothing below `old` is touched.
        result.map_err(|cause| {
            undo(
                cause,
                || f.set_len(old).and_then(|()| f.sync_all()),
                "the partial grow",
            )
        })
    }

    fn stamp(&self, share: &Share) -> Result<()> {
        let f = self.open_volume(&share.id, true)?;
        write_identity(&f, &self.volume_path(&share.id), &share_identity(share))
    }

    fn stamp_exports(&self, share_id: &str, json: &str) -> Result<()> {
        let attrs = [("exports".to_string(), json.to_string())].into();
        let f = self.open_volume(share_id, true)?;
        write_identity(&f, &self.volume_path(share_id), &attrs)
    }

    fn remove_volume(&self, share_id: &str) -> Result<()> {
        let dir = self.share_dir(share_id);
        remove_dir_if_present(&dir)
            .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
        fs::fsync_dir(&self.root.join("shares"))
            .map_err(|e| Error::io("syncing shares directory", e))
    }

    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        let path = self.snapshot_file(snap_id);
        remove_file_if_present(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        fs::fsync_dir(&self.root.join("snapshots"))
            .map_err(|e| Error::io("syncing snapshots directory", e))
    }

    fn export_dir(&self, share_id: &str) -> PathBuf {
        self.share_dir(share_id)
    }

    fn volume_path(&self, share_id: &str) -> PathBuf {
        self.share_dir(share_id).join("volume")
    }

    fn usage(&self) -> Result<fs::FsUsage> {
        fs::usage(&self.root).map_err(|e| Error::io(format!("statvfs {}", self.root.display()), e))
    }

    fn admit_is_cheap(&self) -> bool {
        true
    }

    fn allocation(&self) -> Result<super::Allocation> {
        self.scan_allocation()
    }

    fn volume_allocated(&self, share_id: &str) -> Result<Option<u64>> {
        self.volume_blocks(share_id)
    }

    fn volume_allocated_cached(&self, share_id: &str) -> Option<Result<Option<u64>>> {
        if !self.local {
            return None;
        }
        let path = self.volume_path(share_id);
        fs::allocated_regular_cached(&path)
            .map(|r| r.map_err(|e| Error::io(format!("stat {}", path.display()), e)))
    }

    fn has_legacy_stamp(&self, kind: &str, id: &str) -> bool {
        !self.legacy_identity(kind, id).is_empty()
    }

    fn move_legacy_stamp(
        &self,
        kind: &str,
        id: &str,
        attrs: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        let rel = object_rel(kind, id);
        let path = self.root.join(&rel);
        // A symbolic link, hard link, FIFO... is left as it is: it opens as tampered.
        let f = match fs::open_regular(&self.root_dir()?, &rel, false) {
            Ok(f) => f,
            Err(fs::OpenError::Io(e)) => {
                return Err(Error::io(format!("opening {}", path.display()), e))
            }
            Err(_) => return Ok(None),
        };
        let read = |e| Error::io(format!("reading the stamp of {}", path.display()), e);
        let legacy = fs::get_legacy_identity_fd(&f).map_err(read)?;
        if legacy.is_empty() {
            return Ok(None);
        }
        let done = if fs::get_identity_fd(&f).map_err(read)?.is_empty() {
            // What an earlier shelf's open would have accepted, and nothing else: a file
            // whose user.shelf.* names another object is not given this one's identity.
            let names = |k: &str, v: &str| legacy.get(k).map(String::as_str) == Some(v);
            if !(names("kind", kind) && names("id", id)) {
                return Ok(Some(format!(
                    "{kind} {id}: {} carries user.shelf.* attributes that name {} {}, not \
                     itself: its stamp was not moved, and it opens as tampered (see \
                     `shelfd verify`)",
                    path.display(),
                    legacy.get("kind").map_or("(no kind)", String::as_str),
                    legacy.get("id").map_or("(no id)", String::as_str),
                )));
            }
            write_identity(&f, &path, attrs)?;
            "moved to trusted.shelf.* (written from the database)"
        } else {
            "already in trusted.shelf.*; the leftover user.shelf.* attributes were removed"
        };
        fs::remove_legacy_identity_fd(&f)
            .map_err(|e| Error::io(format!("removing user.shelf.* from {}", path.display()), e))?;
        f.sync_all()
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
        Ok(Some(format!("{kind} {id}: its stamp {done}")))
    }

    fn snapshot_extents(
        &self,
        snap_id: &str,
        size: u64,
        max: usize,
    ) -> Result<super::SnapshotExtents> {
        self.extents_of(snap_id, size, max)
    }

    fn create_staging(&self, receive_id: &str, base: Option<&str>, size: u64) -> Result<File> {
        self.staging(receive_id, base, size)
    }

    fn adopt_staging(&self, receive_id: &str, snap: &Snapshot) -> Result<()> {
        self.adopt(receive_id, snap)
    }

    fn remove_staging(&self, receive_id: Option<&str>) -> Result<usize> {
        self.drop_staging(receive_id)
    }

    fn volume_from_snapshot(&self, snap: &Snapshot, share: &Share) -> Result<()> {
        self.overwrite(snap, share)
    }

    fn scan(&self) -> Result<Vec<OnDisk>> {
        let mut out = Vec::new();
        for (kind, dir) in [("share", "shares"), ("snapshot", "snapshots")] {
            let d = self.root.join(dir);
            let entries = std::fs::read_dir(&d)
                .map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
                let id = entry.file_name().to_string_lossy().into_owned();
                let (path, opened) = self.open_object(kind, &id, false)?;
                // Only what opens as the file shelf made is read: a planted object's own
                // attributes and size (or its target's) are never taken for a volume's.
                let (size, identity, tampered) = match opened {
                    Ok(f) => (
                        f.metadata().ok().map(|m| m.len()),
                        fs::get_identity_fd(&f).unwrap_or_default(),
                        None,
                    ),
                    Err(e @ (fs::OpenError::Tampered(_) | fs::OpenError::Unidentified)) => {
                        let unidentified = matches!(e, fs::OpenError::Unidentified);
                        let legacy = if unidentified {
                            self.legacy_identity(kind, &id)
                        } else {
                            Default::default()
                        };
                        let why = open_error(e, &path, kind, &id).to_string();
                        let t = super::Tamper {
                            why,
                            unidentified,
                            legacy,
                        };
                        (None, Default::default(), Some(t))
                    }
                    Err(fs::OpenError::Missing(_) | fs::OpenError::Io(_)) => {
                        (None, Default::default(), None)
                    }
                };
                out.push(OnDisk {
                    kind: kind.to_string(),
                    id,
                    path,
                    size,
                    identity,
                    tampered,
                });
            }
        }
        Ok(out)
    }
}
