//! Where a file pool's objects are (beneath its directory), opening them checked, and
//! undoing a step that failed part way.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::FilePool;
use crate::error::{Error, Result};
use crate::model::Share;
use crate::pool::share_identity;
use crate::sys::fs;

impl FilePool {
    /// Make `share`'s volume as a reflink (or copy) of `src`, sized and stamped.
    pub(super) fn volume_from_file(&self, src: &File, share: &Share, what: &str) -> Result<()> {
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
            local: false,
        }
    }

    pub(super) fn share_dir(&self, id: &str) -> PathBuf {
        self.root.join("shares").join(id)
    }

    pub(super) fn snapshot_file(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    /// The pool directory, for resolving paths beneath it.
    pub(super) fn root_dir(&self) -> Result<File> {
        fs::open_dir(&self.root)
            .map_err(|e| Error::io(format!("opening pool directory {}", self.root.display()), e))
    }

    /// Open share `id`'s volume (`kind` "share") or snapshot `id`'s file ("snapshot"),
    /// refusing anything but the file shelf made for it. Returns its path with the result.
    pub(super) fn open_object(
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
    pub(super) fn legacy_identity(
        &self,
        kind: &str,
        id: &str,
    ) -> std::collections::BTreeMap<String, String> {
        self.root_dir()
            .ok()
            .and_then(|d| fs::open_regular(&d, &object_rel(kind, id), false).ok())
            .and_then(|f| fs::get_legacy_identity_fd(&f).ok())
            .unwrap_or_default()
    }

    /// Open share `id`'s volume, refusing anything but the file shelf made for it.
    pub(super) fn open_volume(&self, id: &str, write: bool) -> Result<File> {
        let (path, opened) = self.open_object("share", id, write)?;
        opened.map_err(|e| open_error(e, &path, "share", id))
    }

    /// Open snapshot `id`'s file (read-only), refusing anything but the file shelf made.
    pub(super) fn open_snapshot(&self, id: &str) -> Result<File> {
        let (path, opened) = self.open_object("snapshot", id, false)?;
        opened.map_err(|e| open_error(e, &path, "snapshot", id))
    }

    /// Copy `src` into the new file `dst`: reflink, or a sparse copy when the pool cannot.
    pub(super) fn copy_blocks(&self, src: &File, dst: &File, what: &str) -> Result<()> {
        if self.reflink {
            fs::ficlone(src, dst).map_err(|e| Error::io(format!("reflinking {what}"), e))
        } else {
            fs::copy_sparse(src, dst).map_err(|e| Error::io(format!("copying {what}"), e))
        }
    }
}

/// Where share `id`'s volume (`kind` "share") or snapshot `id`'s file is, beneath the pool.
pub(super) fn object_rel(kind: &str, id: &str) -> PathBuf {
    match kind {
        "share" => PathBuf::from("shares").join(id).join("volume"),
        _ => PathBuf::from("snapshots").join(id),
    }
}

/// What [`fs::OpenError::Unidentified`] says.
const UNIDENTIFIED: &str = "it carries no shelf identity";

/// The error for a volume or snapshot that could not be opened.
pub(super) fn open_error(e: fs::OpenError, path: &Path, kind: &str, id: &str) -> Error {
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
pub(super) fn undo(cause: Error, cleanup: impl FnOnce() -> io::Result<()>, what: &str) -> Error {
    match cleanup() {
        Ok(()) => cause,
        Err(e) => Error::rollback(cause, Error::io(format!("removing {what}"), e)),
    }
}

pub(super) fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub(super) fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Write identity attributes on an open volume (`path` names it in errors) and make them
/// durable.
pub(super) fn write_identity(
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
pub(super) fn stamp_error(path: &Path, e: std::io::Error) -> Error {
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
