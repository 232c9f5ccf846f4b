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
use std::io;
use std::path::{Path, PathBuf};

use super::{share_identity, snapshot_identity, OnDisk, Pool};
use crate::error::{Error, Result};
use crate::model::{PoolKind, Share, Snapshot};
use crate::sys::fs;

/// A pool of sparse files in a directory.
#[derive(Debug)]
pub struct FilePool {
    name: String,
    root: PathBuf,
    reflink: bool,
}

impl FilePool {
    /// Make `share`'s volume as a reflink (or copy) of `src`, sized and stamped.
    fn volume_from_file(&self, src: &File, share: &Share, what: &str) -> Result<()> {
        let dir = self.share_dir(&share.id);
        std::fs::create_dir(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join("volume");
        let made = (|| -> Result<()> {
            let dst = fs::create_new(&path, 0o660)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            self.copy_blocks(src, &dst, what)?;
            dst.set_len(share.size)
                .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
            fs::set_identity_fd(&dst, &share_identity(share)).map_err(|e| stamp_error(&path, e))?;
            dst.sync_all()
                .map_err(|e| Error::io("syncing the clone", e))?;
            fs::fsync_dir(&dir).map_err(|e| Error::io("syncing share directory", e))?;
            fs::fsync_dir(dir.parent().expect("share dir has a parent"))
                .map_err(|e| Error::io("syncing shares directory", e))
        })();
        made.map_err(|cause| undo(cause, || remove_dir_if_present(&dir), "the partial clone"))
    }
    /// A file pool named `name` at `root` (not touched until [`Pool::prepare`]).
    pub fn new(name: &str, root: PathBuf) -> Self {
        FilePool {
            name: name.to_string(),
            root,
            reflink: false,
        }
    }

    fn share_dir(&self, id: &str) -> PathBuf {
        self.root.join("shares").join(id)
    }

    fn snapshot_file(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    /// The pool directory, for resolving paths beneath it.
    fn root_dir(&self) -> Result<File> {
        fs::open_dir(&self.root)
            .map_err(|e| Error::io(format!("opening pool directory {}", self.root.display()), e))
    }

    /// Open share `id`'s volume (`kind` "share") or snapshot `id`'s file ("snapshot"),
    /// refusing anything but the file shelf made for it. Returns its path with the result.
    fn open_object(
        &self,
        kind: &str,
        id: &str,
        write: bool,
    ) -> Result<(PathBuf, std::result::Result<File, fs::OpenError>)> {
        let rel = object_rel(kind, id);
        let opened = fs::open_checked(&self.root_dir()?, &rel, fs::Expect { kind, id }, write);
        Ok((self.root.join(rel), opened))
    }

    /// The `user.shelf.*` attributes of the plain file at object `id`'s path (empty when
    /// there are none or it cannot be opened as a regular file).
    fn legacy_identity(&self, kind: &str, id: &str) -> std::collections::BTreeMap<String, String> {
        self.root_dir()
            .ok()
            .and_then(|d| fs::open_regular(&d, &object_rel(kind, id), false).ok())
            .and_then(|f| fs::get_legacy_identity_fd(&f).ok())
            .unwrap_or_default()
    }

    /// Open share `id`'s volume, refusing anything but the file shelf made for it.
    fn open_volume(&self, id: &str, write: bool) -> Result<File> {
        let (path, opened) = self.open_object("share", id, write)?;
        opened.map_err(|e| open_error(e, &path, "share", id))
    }

    /// Open snapshot `id`'s file (read-only), refusing anything but the file shelf made.
    fn open_snapshot(&self, id: &str) -> Result<File> {
        let (path, opened) = self.open_object("snapshot", id, false)?;
        opened.map_err(|e| open_error(e, &path, "snapshot", id))
    }

    /// Copy `src` into the new file `dst`: reflink, or a sparse copy when the pool cannot.
    fn copy_blocks(&self, src: &File, dst: &File, what: &str) -> Result<()> {
        if self.reflink {
            fs::ficlone(src, dst).map_err(|e| Error::io(format!("reflinking {what}"), e))
        } else {
            fs::copy_sparse(src, dst).map_err(|e| Error::io(format!("copying {what}"), e))
        }
    }
}

/// Where share `id`'s volume (`kind` "share") or snapshot `id`'s file is, beneath the pool.
fn object_rel(kind: &str, id: &str) -> PathBuf {
    match kind {
        "share" => PathBuf::from("shares").join(id).join("volume"),
        _ => PathBuf::from("snapshots").join(id),
    }
}

/// What [`fs::OpenError::Unidentified`] says.
const UNIDENTIFIED: &str = "it carries no shelf identity";

/// The error for a volume or snapshot that could not be opened.
fn open_error(e: fs::OpenError, path: &Path, kind: &str, id: &str) -> Error {
    match e {
        fs::OpenError::Unidentified => {
            open_error(fs::OpenError::Tampered(UNIDENTIFIED.into()), path, kind, id)
        }
        fs::OpenError::Tampered(why) => Error::Tampered(format!(
            "{kind} {id}: {} is not the file shelf made: {why}; it was replaced through the \
             share's NFS export, and nothing was done to it or to what it points at (see \
             `shelfd verify`)",
            path.display()
        )),
        fs::OpenError::Missing(e) | fs::OpenError::Io(e) => {
            Error::io(format!("opening {}", path.display()), e)
        }
    }
}

/// Remove what a failed step left behind; turn a failed cleanup into a rollback error.
fn undo(cause: Error, cleanup: impl FnOnce() -> io::Result<()>, what: &str) -> Error {
    match cleanup() {
        Ok(()) => cause,
        Err(e) => Error::rollback(cause, Error::io(format!("removing {what}"), e)),
    }
}

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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

    fn images_dir(&self) -> Option<PathBuf> {
        Some(self.root.join("images"))
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

/// Write identity attributes on an open volume (`path` names it in errors) and make them
/// durable.
fn write_identity(
    f: &File,
    path: &Path,
    attrs: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    fs::set_identity_fd(f, attrs).map_err(|e| stamp_error(path, e))?;
    f.sync_all()
        .map_err(|e| Error::io("syncing the volume's identity", e))
}

/// A failure to write a volume's identity. Too little room for extended attributes (ext4
/// keeps a file's attributes in one block, about 4 KiB) is the request's size against
/// this filesystem, not a full pool.
fn stamp_error(path: &Path, e: std::io::Error) -> Error {
    let full = || fs::usage(path.parent().unwrap_or(path)).is_ok_and(|u| u.free < 1 << 20);
    match e.raw_os_error() {
        Some(libc::ENOSPC) if full() => Error::io(format!("stamping {}", path.display()), e),
        Some(libc::ENOSPC) | Some(libc::E2BIG) => Error::Invalid(format!(
            "the identity of {} (its metadata and exports) does not fit in the extended attributes this filesystem allows; keep metadata smaller or use an XFS pool",
            path.display()
        )),
        _ => Error::io(format!("stamping {}", path.display()), e),
    }
}
