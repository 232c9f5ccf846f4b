//! The file pool: a directory on a filesystem.
//!
//! Layout: `<pool>/shares/<share-id>/volume` (mode 0660), one volume file per share
//! directory, and `<pool>/snapshots/<snapshot-id>` (mode 0440). Sparse volumes are made with
//! ftruncate, preallocated ones with fallocate. Snapshots and clones are `FICLONE` reflinks
//! when the filesystem can, else sparse-aware copies. Every file carries `user.shelf.*`
//! xattrs describing itself, and every change is fsynced with its directory before the
//! call returns.

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
    /// Make `share`'s volume as a reflink (or copy) of `src_path`, sized and stamped.
    fn volume_from_file(&self, src_path: &Path, share: &Share, what: &str) -> Result<()> {
        let src = File::open(src_path)
            .map_err(|e| Error::io(format!("opening {}", src_path.display()), e))?;
        let dir = self.share_dir(&share.id);
        std::fs::create_dir(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join("volume");
        let made = (|| -> Result<()> {
            let dst = fs::create_new(&path, 0o660)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            self.copy_blocks(&src, &dst, what)?;
            dst.set_len(share.size)
                .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
            fs::set_identity(&path, &share_identity(share)).map_err(|e| stamp_error(&path, e))?;
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

    /// Copy `src` into the new file `dst`: reflink, or a sparse copy when the pool cannot.
    fn copy_blocks(&self, src: &File, dst: &File, what: &str) -> Result<()> {
        if self.reflink {
            fs::ficlone(src, dst).map_err(|e| Error::io(format!("reflinking {what}"), e))
        } else {
            fs::copy_sparse(src, dst).map_err(|e| Error::io(format!("copying {what}"), e))
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
            fs::set_identity(&path, &share_identity(share)).map_err(|e| stamp_error(&path, e))?;
            f.sync_all()
                .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
            fs::fsync_dir(&dir).map_err(|e| Error::io("syncing share directory", e))?;
            fs::fsync_dir(dir.parent().expect("share dir has a parent"))
                .map_err(|e| Error::io("syncing shares directory", e))
        })();
        made.map_err(|cause| undo(cause, || remove_dir_if_present(&dir), "the partial volume"))
    }

    fn snapshot(&self, share: &Share, snap: &Snapshot) -> Result<()> {
        let src_path = self.volume_path(&share.id);
        let src = File::open(&src_path)
            .map_err(|e| Error::io(format!("opening {}", src_path.display()), e))?;
        let dst_path = self.snapshot_file(&snap.id);
        let made = (|| -> Result<()> {
            let dst = fs::create_new(&dst_path, 0o440)
                .map_err(|e| Error::io(format!("creating {}", dst_path.display()), e))?;
            self.copy_blocks(
                &src,
                &dst,
                &format!("share {} into snapshot {}", share.name, snap.name),
            )?;
            dst.set_len(snap.size)
                .map_err(|e| Error::io(format!("sizing {}", dst_path.display()), e))?;
            fs::set_identity(&dst_path, &snapshot_identity(snap))
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
        let src_path = self.snapshot_file(&snap.id);
        self.volume_from_file(
            &src_path,
            share,
            &format!("snapshot {} into share {}", snap.name, share.name),
        )
    }

    fn images_dir(&self) -> Option<PathBuf> {
        Some(self.root.join("images"))
    }

    fn create_from_image(&self, image: &Path, share: &Share) -> Result<()> {
        self.volume_from_file(image, share, &format!("image into share {}", share.name))
    }

    fn grow(&self, share: &Share, size: u64) -> Result<()> {
        let path = self.volume_path(&share.id);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let old = f
            .metadata()
            .map_err(|e| Error::io("reading volume size", e))?
            .len();
        if size > old {
            if share.sparse {
                f.set_len(size)
            } else {
                fs::preallocate(&f, old, size - old)
            }
            .map_err(|e| Error::io(format!("growing share {} to {size} bytes", share.name), e))?;
        }
        let mut grown = share.clone();
        grown.size = size;
        fs::set_identity(&path, &share_identity(&grown)).map_err(|e| stamp_error(&path, e))?;
        f.sync_all()
            .map_err(|e| Error::io("syncing the grown volume", e))
    }

    fn stamp(&self, share: &Share) -> Result<()> {
        write_identity(&self.volume_path(&share.id), &share_identity(share))
    }

    fn stamp_exports(&self, share_id: &str, json: &str) -> Result<()> {
        let attrs = [("exports".to_string(), json.to_string())].into();
        write_identity(&self.volume_path(share_id), &attrs)
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

    fn scan(&self) -> Result<Vec<OnDisk>> {
        let mut out = Vec::new();
        for (kind, dir) in [("share", "shares"), ("snapshot", "snapshots")] {
            let d = self.root.join(dir);
            let entries = std::fs::read_dir(&d)
                .map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
                let id = entry.file_name().to_string_lossy().into_owned();
                let path = if kind == "share" {
                    entry.path().join("volume")
                } else {
                    entry.path()
                };
                let identity = fs::get_identity(&path).unwrap_or_default();
                out.push(OnDisk {
                    kind: kind.to_string(),
                    id,
                    path,
                    size: None,
                    identity,
                });
            }
        }
        Ok(out)
    }
}

/// Write identity attributes on an existing file and make them durable.
fn write_identity(path: &Path, attrs: &std::collections::BTreeMap<String, String>) -> Result<()> {
    fs::set_identity(path, attrs).map_err(|e| stamp_error(path, e))?;
    File::open(path)
        .and_then(|f| f.sync_all())
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
