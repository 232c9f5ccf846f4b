//! `share.revert` on a file pool: the snapshot is reflinked into a staged volume in
//! `<pool>/staging/revert-<share-id>` (a directory no NFS client reaches), stamped with
//! the share's identity and the revert's tag, made durable, then renamed over the share's
//! volume in one atomic step. Before the rename the volume is untouched; after it the
//! volume is the snapshot's content, so a crash at any point leaves one or the other
//! ([`crate::pool::RevertState`] tells start-up recovery which).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::objects::{remove_file_if_present, stamp_error, undo};
use super::FilePool;
use crate::error::{Error, Result};
use crate::model::{Share, Snapshot};
use crate::pool::{share_identity, Pool, RevertState};
use crate::sys::fs;

/// The identity key a staged volume carries: the revert's tag (its intent id).
pub(super) const REVERT_KEY: &str = "revert";

impl FilePool {
    /// Where share `id`'s staged revert is.
    fn staging_file(&self, share_id: &str) -> PathBuf {
        self.root.join("staging").join(staging_name(share_id))
    }

    /// [`crate::pool::Pool::revert_stage`].
    pub(super) fn stage_revert(&self, share: &Share, snap: &Snapshot, tag: &str) -> Result<()> {
        // Both opened checked: a volume or snapshot planted through NFS is refused before
        // anything is written.
        let old = self.open_volume(&share.id, false)?;
        let src = self.open_snapshot(&snap.id)?;
        let read = |e| Error::io(format!("reading the identity of share {}", share.name), e);
        let mut attrs = fs::get_identity_fd(&old).map_err(read)?;
        attrs.extend(share_identity(share));
        attrs.insert(REVERT_KEY.into(), tag.into());
        let meta = old
            .metadata()
            .map_err(|e| Error::io("reading the volume's owner", e))?;
        let path = self.staging_file(&share.id);
        remove_file_if_present(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        let staging = fs::open_dir(&self.root.join("staging"))
            .map_err(|e| Error::io("opening the staging directory", e))?;
        let made = (|| -> Result<()> {
            let dst = fs::create_new_at(&staging, Path::new(&staging_name(&share.id)), 0o660)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            self.copy_blocks(
                &src,
                &dst,
                &format!("snapshot {} into share {}", snap.name, share.name),
            )?;
            let len = snap.size.min(share.size);
            dst.set_len(len)
                .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
            if share.size > len {
                // Grown after the snapshot: the share keeps its size (the tail reads zeros).
                if share.sparse {
                    dst.set_len(share.size)
                } else {
                    fs::preallocate(&dst, len, share.size - len)
                }
                .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
            }
            std::os::unix::fs::fchown(&dst, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| Error::io(format!("setting the owner of {}", path.display()), e))?;
            dst.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))?;
            fs::set_identity_fd(&dst, &attrs).map_err(|e| stamp_error(&path, e))?;
            dst.sync_all()
                .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
            fs::fsync_dir(&self.root.join("staging"))
                .map_err(|e| Error::io("syncing the staging directory", e))
        })();
        made.map_err(|cause| {
            undo(
                cause,
                || remove_file_if_present(&path),
                "the partial revert",
            )
        })
    }

    /// [`crate::pool::Pool::revert_swap`].
    pub(super) fn swap_revert(&self, share: &Share) -> Result<()> {
        // Checked again: what is replaced must be the volume shelf made.
        drop(self.open_volume(&share.id, false)?);
        let from = self.staging_file(&share.id);
        let to = self.volume_path(&share.id);
        std::fs::rename(&from, &to).map_err(|e| {
            Error::io(
                format!("renaming {} over {}", from.display(), to.display()),
                e,
            )
        })?;
        fs::fsync_dir(&self.share_dir(&share.id))
            .map_err(|e| Error::io("syncing the share directory", e))?;
        fs::fsync_dir(&self.root.join("staging"))
            .map_err(|e| Error::io("syncing the staging directory", e))
    }

    /// [`crate::pool::Pool::revert_state`].
    pub(super) fn revert_state_of(&self, share_id: &str, tag: &str) -> Result<RevertState> {
        let path = self.staging_file(share_id);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => return Ok(RevertState::Staged),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("looking at {}", path.display()), e)),
        }
        // A volume that does not open as shelf's is not the reverted one either.
        let Ok(f) = self.open_volume(share_id, false) else {
            return Ok(RevertState::Untouched);
        };
        let identity = fs::get_identity_fd(&f).unwrap_or_default();
        Ok(
            if identity.get(REVERT_KEY).map(String::as_str) == Some(tag) {
                RevertState::Swapped
            } else {
                RevertState::Untouched
            },
        )
    }

    /// [`crate::pool::Pool::revert_discard`].
    pub(super) fn discard_revert(&self, share_id: &str) -> Result<()> {
        let path = self.staging_file(share_id);
        remove_file_if_present(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        fs::fsync_dir(&self.root.join("staging"))
            .map_err(|e| Error::io("syncing the staging directory", e))
    }
}

/// The staged file's name in `<pool>/staging`.
fn staging_name(share_id: &str) -> String {
    format!("revert-{share_id}")
}
