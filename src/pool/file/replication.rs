//! A file pool's side of send and receive: snapshots' extent maps (FIEMAP), and the
//! staging files of receives in `<pool>/receiving/<receive-id>` (mode 0600), moved into
//! `snapshots/` when a receive commits and removed at start-up otherwise.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::objects::{remove_file_if_present, stamp_error, write_identity};
use super::FilePool;
use crate::error::{Error, Result};
use crate::model::{Share, Snapshot};
use crate::pool::{share_identity, snapshot_identity, Pool, SnapshotExtents};
use crate::sys::{fiemap, fs};

const RECEIVING: &str = "receiving";

impl FilePool {
    fn staging_path(&self, receive_id: &str) -> PathBuf {
        self.root.join(RECEIVING).join(receive_id)
    }

    pub(super) fn extents_of(
        &self,
        snap_id: &str,
        size: u64,
        max: usize,
    ) -> Result<SnapshotExtents> {
        let file = self.open_snapshot(snap_id)?;
        let map = fiemap::extent_map(&file, size, max).map_err(|e| match e.kind() {
            std::io::ErrorKind::OutOfMemory => Error::Unsupported(format!(
                "snapshot {snap_id} has {e} in its extent map: too fragmented to send"
            )),
            _ if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Error::Unsupported(format!(
                "pool {}'s filesystem has no FIEMAP: it cannot send",
                self.name
            )),
            _ => Error::io(format!("mapping the extents of snapshot {snap_id}"), e),
        })?;
        Ok(SnapshotExtents { file, map })
    }

    pub(super) fn staging(&self, receive_id: &str, base: Option<&str>, size: u64) -> Result<File> {
        let dir = self.root.join(RECEIVING);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::io(format!("creating {}", dir.display()), e))
            }
            _ => {}
        }
        let path = self.staging_path(receive_id);
        let f = fs::create_new(&path, 0o600)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let made = (|| -> Result<()> {
            if let Some(b) = base {
                let src = self.open_snapshot(b)?;
                self.copy_blocks(&src, &f, &format!("snapshot {b} into a receive"))?;
            }
            f.set_len(size)
                .map_err(|e| Error::io(format!("sizing {}", path.display()), e))
        })();
        match made {
            Ok(()) => Ok(f),
            Err(cause) => Err(super::objects::undo(
                cause,
                || remove_file_if_present(&path),
                "the staging file",
            )),
        }
    }

    pub(super) fn adopt(&self, receive_id: &str, snap: &Snapshot) -> Result<()> {
        let from = self.staging_path(receive_id);
        let to = self.snapshot_file(&snap.id);
        let f =
            File::open(&from).map_err(|e| Error::io(format!("opening {}", from.display()), e))?;
        fs::set_identity_fd(&f, &snapshot_identity(snap)).map_err(|e| stamp_error(&from, e))?;
        f.sync_all()
            .map_err(|e| Error::io("syncing the received snapshot", e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o440))
            .map_err(|e| Error::io(format!("chmod {}", from.display()), e))?;
        if to.exists() {
            return Err(Error::AlreadyExists(format!(
                "snapshot {} is already on disk",
                snap.id
            )));
        }
        std::fs::rename(&from, &to)
            .map_err(|e| Error::io(format!("moving {} to {}", from.display(), to.display()), e))?;
        fs::fsync_dir(&self.root.join("snapshots"))
            .map_err(|e| Error::io("syncing snapshots directory", e))?;
        fs::fsync_dir(&self.root.join(RECEIVING)).map_err(|e| Error::io("syncing receiving", e))
    }

    pub(super) fn drop_staging(&self, receive_id: Option<&str>) -> Result<usize> {
        let dir = self.root.join(RECEIVING);
        let ids: Vec<String> = match receive_id {
            Some(id) => vec![id.to_string()],
            None => match std::fs::read_dir(&dir) {
                Ok(rd) => rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
            },
        };
        let mut n = 0;
        for id in ids {
            let p: PathBuf = dir.join(Path::new(&id).file_name().unwrap_or_default());
            if p.exists() {
                n += 1;
            }
            remove_file_if_present(&p)
                .map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
        }
        Ok(n)
    }

    pub(super) fn overwrite(&self, snap: &Snapshot, share: &Share) -> Result<()> {
        let src = self.open_snapshot(&snap.id)?;
        let dst = self.open_volume(&share.id, true)?;
        let path = self.volume_path(&share.id);
        self.copy_over(
            &src,
            &dst,
            &format!("snapshot {} onto share {}", snap.name, share.name),
        )?;
        dst.set_len(share.size)
            .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
        write_identity(&dst, &path, &share_identity(share))
    }

    /// Replace `dst`'s content with `src`'s: a reflink of the whole file, or a sparse copy.
    fn copy_over(&self, src: &File, dst: &File, what: &str) -> Result<()> {
        if !self.reflink {
            dst.set_len(0)
                .map_err(|e| Error::io(format!("emptying for {what}"), e))?;
        }
        self.copy_blocks(src, dst, what)
    }
}
