//! `share.revert`'s exports: withdrawing the NFS exports of a formatted share before its
//! filesystem is unmounted and adding them back after it is mounted again, and the
//! start-up recovery of an interrupted revert.
//!
//! An NFS export of a formatted share is of its mounted filesystem, not of the directory
//! holding the volume: the NFS server holds that filesystem open (the unmount fails with
//! "target is busy") and, were it unmounted under it, would go on serving the old one or
//! the empty mount point. The export's row is never touched: after a crash between the
//! withdrawal and the re-add, the reconcile that shelfd runs once the start-up mounts are
//! done adds it back, as it does for any export its daemon lacks.

use std::sync::Arc;

use crate::engine::{blocking, Engine};
use crate::error::Result;
use crate::model::{Layout, Medium, Share, Snapshot};
use crate::pool::{Pool, RevertState};
use crate::store::{self, ExportRow};

/// The failpoint between the withdrawal of the exports and the unmount (hit by
/// `tests/revert_nfs.rs`; not in [`crate::engine::failpoint::REVERT_POINTS`]: those are
/// walked with a block share, which never reaches this one).
pub(super) const WITHDRAW_POINT: &str = "share.revert.after_withdraw";

/// What one revert works on.
pub(super) struct Steps<'a> {
    /// The share's pool.
    pub pool: &'a Arc<dyn Pool>,
    /// The share reverted.
    pub share: &'a Share,
    /// The snapshot it reverts to.
    pub snap: &'a Snapshot,
    /// The journaled intent (its id is the revert's tag).
    pub intent: i64,
    /// The exports of the mounted filesystem ([`serves_mount`]): withdrawn, then re-added.
    pub mounted: &'a [ExportRow],
    /// The other exports: re-opened after the swap.
    pub others: &'a [ExportRow],
}

/// Whether `row` exports `share`'s mounted filesystem (an NFS export of a formatted share).
pub(super) fn serves_mount(share: &Share, row: &ExportRow) -> bool {
    share.layout == Layout::Filesystem && row.export.protocol.medium() == Medium::Directory
}

impl Engine {
    /// Remove `rows` from their daemons (their rows stay). The caller holds their guards.
    pub(super) async fn withdraw_exports(&self, share: &Share, rows: &[ExportRow]) -> Result<()> {
        for row in rows {
            let spec = self.spec_for(row, share)?;
            self.exporter(row.export.driver).remove(&spec).await?;
            log::info!(
                "share {}: {} export withdrawn for the revert",
                share.name,
                row.export.driver.as_str()
            );
        }
        Ok(())
    }

    /// Give `row` to its daemon again (create, or bring in line with the row).
    pub(super) async fn apply_export(&self, share: &Share, row: &ExportRow) -> Result<()> {
        let spec = self.spec_for(row, share)?;
        self.exporter(row.export.driver).apply(&spec).await
    }

    /// After the mount: add the withdrawn `rows` back. Returns warnings for those that
    /// could not be (the next reconcile adds them).
    pub(super) async fn readd_exports(&self, share: &Share, rows: &[ExportRow]) -> Vec<String> {
        let mut warnings = Vec::new();
        for row in rows {
            if let Err(e) = self.apply_export(share, row).await {
                log::warn!(
                    "share {}: the {} export was not added back after the revert: {e}",
                    share.name,
                    row.export.driver.as_str()
                );
                warnings.push(format!(
                    "{} export: not added back after the revert ({e}); the next reconcile \
                     adds it",
                    row.export.driver.as_str()
                ));
            }
        }
        warnings
    }

    /// Start-up recovery of an interrupted revert: discard what was staged (the volume is
    /// the old one), or finish a swapped one (its exports re-opened; a formatted share is
    /// mounted by the start-up that follows, and its withdrawn NFS exports come back with
    /// the reconcile after that mount).
    pub(in crate::engine) async fn replay_revert(&self, intent: &store::Intent) -> Result<String> {
        let id = intent.object.clone();
        let Some(share) = self.store.call(move |c| store::get_share(c, &id)).await? else {
            return Ok(format!(
                "revert of vanished share {} dropped",
                intent.object
            ));
        };
        let pool = self.pool(&share.pool)?;
        let (p, sid, tag) = (pool.clone(), share.id.clone(), intent.id.to_string());
        let state = blocking(move || p.revert_state(&sid, &tag)).await?;
        let what = match state {
            RevertState::Staged => {
                let (p, sid) = (pool.clone(), share.id.clone());
                blocking(move || p.revert_discard(&sid)).await?;
                "undone (the staged volume was removed; the share keeps its old content)"
            }
            RevertState::Swapping | RevertState::Swapped => {
                if state == RevertState::Swapping {
                    let (p, sh) = (pool.clone(), share.clone());
                    blocking(move || p.revert_swap(&sh)).await?;
                }
                let sid = share.id.clone();
                let rows = self
                    .store
                    .call(move |c| store::list_exports(c, Some(&sid), None))
                    .await?;
                let others: Vec<ExportRow> = rows
                    .into_iter()
                    .filter(|r| !serves_mount(&share, r))
                    .collect();
                let _exports = self.export_guards_for(&others).await;
                for w in self.reopen_exports(&share, &others).await {
                    log::warn!("recovery: share {}: {w}", share.name);
                }
                let (p, sid) = (pool.clone(), share.id.clone());
                if let Err(e) = blocking(move || p.revert_finish(&sid)).await {
                    log::warn!("recovery: share {}: the old volume stays: {e}", share.name);
                }
                "finished (the share has the snapshot's content; its exports were re-opened)"
            }
            RevertState::Untouched => {
                "undone (nothing was staged; the share keeps its old content)"
            }
        };
        let withdrawn = match intent.data["withdrawn"].as_array() {
            Some(w) if !w.is_empty() => {
                "; its NFS export, withdrawn for the revert, comes back with the reconcile \
                 after the start-up mounts"
            }
            _ => "",
        };
        Ok(format!(
            "revert of share {} ({}) to snapshot {} was interrupted: {what}{withdrawn}",
            share.name,
            share.id,
            intent.data["snapshot"].as_str().unwrap_or("(unknown)")
        ))
    }
}
