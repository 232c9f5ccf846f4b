//! Formatted (`filesystem`) shares in the engine: resolving the layout of a create, making
//! and mounting the filesystem, freezing it around snapshots, growing it, unmounting it
//! before deletion, and mounting every one at start-up before exports come back.

use std::sync::Arc;

use super::Engine;
use crate::error::{Error, Result};
use crate::model::{FsKind, Layout, Medium, Protocol, Share, ShareState};
use crate::pool::Pool;
use crate::store;

/// The layout and filesystem a create asks for, with the configured default filesystem.
pub(super) fn resolve_layout(
    layout: Option<Layout>,
    filesystem: Option<FsKind>,
    default: FsKind,
    size: u64,
) -> Result<(Layout, Option<FsKind>)> {
    let (layout, fs) = match (layout, filesystem) {
        (Some(Layout::Block), Some(fs)) => {
            return Err(Error::Invalid(format!(
                "filesystem {} needs layout filesystem, not block",
                fs.as_str()
            )))
        }
        (None | Some(Layout::Block), None) => return Ok((Layout::Block, None)),
        (_, Some(fs)) => (Layout::Filesystem, fs),
        (Some(Layout::Filesystem), None) => (Layout::Filesystem, default),
    };
    if size < fs.min_size() {
        return Err(Error::Invalid(format!(
            "a {} share needs at least {} bytes; {size} asked",
            fs.as_str(),
            fs.min_size()
        )));
    }
    Ok((layout, Some(fs)))
}

impl Engine {
    /// Make the filesystem of a new share and mount it; on failure nothing stays mounted.
    pub(super) async fn make_filesystem(&self, pool: &Arc<dyn Pool>, share: &Share) -> Result<()> {
        let volume = pool.volume_path(&share.id);
        self.formatter.format(share, &volume).await?;
        self.mount_share(pool, share).await
    }

    /// Mount a formatted share (no-op when mounted; thaws a frozen one).
    pub(super) async fn mount_share(&self, pool: &Arc<dyn Pool>, share: &Share) -> Result<()> {
        let volume = pool.volume_path(&share.id);
        match self.formatter.mount(share, &volume).await {
            Ok(mp) => {
                log::info!("share {} mounted at {}", share.name, mp.display());
                Ok(())
            }
            Err(e) => {
                // Leave no empty mount point behind for an NFS export to expose.
                let _ = self.formatter.unmount(&share.id).await;
                Err(e)
            }
        }
    }

    /// Unmount a share before its volume goes (no-op for block shares and unmounted ones).
    pub(super) async fn unmount_share(&self, share: &Share) -> Result<()> {
        if share.layout != Layout::Filesystem {
            return Ok(());
        }
        self.formatter.unmount(&share.id).await.map_err(|e| {
            Error::Busy(format!(
                "share {} cannot be unmounted ({e}); is something using {}?",
                share.name,
                self.formatter.mountpoint(&share.id).display()
            ))
        })
    }

    /// Run `f` (a snapshot) with the share's filesystem frozen, so the copy is consistent.
    pub(super) async fn frozen<T>(
        &self,
        pool: &Arc<dyn Pool>,
        share: &Share,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if share.layout != Layout::Filesystem
            || pool.snapshot_freezes()
            || self.formatter.mounted(&share.id).await.is_none()
        {
            return f.await;
        }
        let mp = self.formatter.mountpoint(&share.id);
        self.formatter.freeze(&mp).await?;
        let r = f.await;
        self.formatter.thaw(&mp).await;
        r
    }

    /// After a grow: grow the filesystem too. Returns a warning on failure (the volume is
    /// grown and recorded; the filesystem grows at its next mount or a retry).
    pub(super) async fn grow_filesystem(&self, share: &Share) -> Option<String> {
        if share.layout != Layout::Filesystem {
            return None;
        }
        self.formatter.grow(share).await.err().map(|e| {
            format!(
                "share {}: the volume grew but its filesystem did not: {e}",
                share.name
            )
        })
    }

    /// Refuse what a formatted share cannot do: it is mounted here, so it is never handed
    /// out as a block device.
    pub(super) fn check_protocol(&self, share: &Share, protocol: Protocol) -> Result<()> {
        if share.layout == Layout::Filesystem && protocol.medium() == Medium::Block {
            return Err(Error::Invalid(format!(
                "share {} is a filesystem share (mounted by shelfd); export it over NFS, not {}",
                share.name,
                self.protocol(protocol).title()
            )));
        }
        Ok(())
    }

    /// Mount every available formatted share (start-up, before exports come back).
    /// Returns one line per failure; exports of a share that is not mounted find no
    /// directory, so nothing empty is exported in its place.
    pub async fn mount_filesystems(&self) -> Result<Vec<String>> {
        let shares = self
            .store
            .call(|c| store::list_shares(c, None, None, None))
            .await?;
        let mut problems = Vec::new();
        let names = self.pool_names();
        for s in shares
            .iter()
            .filter(|s| s.layout == Layout::Filesystem && s.state == ShareState::Available)
            .filter(|s| names.contains(&s.pool))
        {
            let pool = self.pool(&s.pool)?;
            if let Err(e) = self.mount_share(&pool, s).await {
                problems.push(format!("share {} ({}): not mounted: {e}", s.name, s.id));
            }
        }
        Ok(problems)
    }

    /// Where a formatted share is mounted (its NFS export path).
    pub(super) fn mountpoint(&self, share_id: &str) -> std::path::PathBuf {
        self.formatter.mountpoint(share_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_resolve_with_the_default_and_the_minimum() {
        let big = 1 << 30;
        assert_eq!(
            resolve_layout(None, None, FsKind::Xfs, 4096).unwrap(),
            (Layout::Block, None)
        );
        assert_eq!(
            resolve_layout(Some(Layout::Filesystem), None, FsKind::Ext4, big).unwrap(),
            (Layout::Filesystem, Some(FsKind::Ext4))
        );
        assert_eq!(
            resolve_layout(None, Some(FsKind::Xfs), FsKind::Ext4, big).unwrap(),
            (Layout::Filesystem, Some(FsKind::Xfs))
        );
        assert!(resolve_layout(Some(Layout::Block), Some(FsKind::Xfs), FsKind::Xfs, big).is_err());
        assert!(resolve_layout(None, Some(FsKind::Xfs), FsKind::Xfs, 100 << 20).is_err());
    }
}
