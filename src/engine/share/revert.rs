//! `share.revert`: the share's content becomes one of its own snapshots'.
//!
//! Steps, each journaled under one `share.revert` intent (its id is the revert's tag):
//! stage (the pool makes a new volume with the snapshot's content beside the old one),
//! unmount a formatted share, swap (one atomic rename on a file pool), re-open the
//! exports that hold the old volume open (tgt and LIO LUNs re-created, nvmet namespaces
//! re-enabled; an NFS export keeps its directory), mount again, forget the intent. A
//! crash before the swap leaves the old content (recovery discards the staged volume),
//! after it the new one (recovery re-opens the exports). The share keeps its current size
//! and identity; the snapshot is not consumed.

use ciborium::Value;

use super::ensure_available;
use crate::engine::{answer, blocking, failpoint, Engine};
use crate::error::{Error, Result};
use crate::model::{Layout, Outcome, Share, ShareState, Snapshot};
use crate::pool::RevertState;
use crate::proto::{Answer, ShareRevertArgs};
use crate::store;

/// The intent's op.
pub(in crate::engine) const REVERT_INTENT: &str = "share.revert";

impl Engine {
    /// `share.revert`: refused with `busy` while the share is attached unless `force`;
    /// `invalid_argument` for a snapshot of another share; `warnings` says what could not
    /// follow (an export, the mount), as `share.resize` does.
    pub(in crate::engine) async fn revert_share(&self, a: ShareRevertArgs) -> Result<Answer> {
        let id = self.share_id(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let share = self.share_by_id(&id).await?;
        ensure_available(&share)?;
        let snap = self.own_snapshot(&share, &a.snapshot).await?;
        let sid = share.id.clone();
        let attached = self
            .store
            .call(move |c| store::list_attachments(c, Some(&sid)))
            .await?;
        if !attached.is_empty() && !a.force {
            let hosts: Vec<&str> = attached.iter().map(|x| x.host.as_str()).collect();
            return Err(Error::Busy(format!(
                "share {} is attached to {}; detach it first or pass force: true (its \
                 clients then see the content change under them)",
                share.name,
                hosts.join(", ")
            )));
        }
        let pool = self.pool(&share.pool)?;
        let (sid, snap_id) = (share.id.clone(), snap.id.clone());
        let intent = self
            .store
            .write(move |c| {
                let data = serde_json::json!({ "snapshot": snap_id });
                store::insert_intent(c, REVERT_INTENT, &sid, &data)
            })
            .await?;
        failpoint::hit("share.revert.after_intent");
        let tag = intent.to_string();
        let (p, sh, sn, t) = (pool.clone(), share.clone(), snap.clone(), tag.clone());
        if let Err(cause) = blocking(move || p.revert_stage(&sh, &sn, &t)).await {
            return Err(self.undo_revert(&share, intent, false, cause).await);
        }
        failpoint::hit("share.revert.after_stage");
        if let Err(cause) = self.unmount_share(&share).await {
            return Err(self.undo_revert(&share, intent, false, cause).await);
        }
        let (p, sh) = (pool.clone(), share.clone());
        if let Err(cause) = blocking(move || p.revert_swap(&sh)).await {
            return Err(self.undo_revert(&share, intent, true, cause).await);
        }
        failpoint::hit("share.revert.after_swap");
        let mut warnings = self.reopen_exports(&share).await;
        let (p, sid) = (pool.clone(), share.id.clone());
        if let Err(e) = blocking(move || p.revert_finish(&sid)).await {
            warnings.push(format!(
                "share {}: reverted, but the old volume was not removed ({e}); the next \
                 revert or start-up recovery removes it",
                share.name
            ));
        }
        if share.layout == Layout::Filesystem {
            match self.mount_share(&pool, &share).await {
                Ok(()) => warnings.extend(self.grow_filesystem(&share).await),
                Err(e) => warnings.push(format!(
                    "share {}: reverted, but its filesystem did not mount ({e}); the next \
                     start-up mounts it again",
                    share.name
                )),
            }
        }
        self.store
            .write(move |c| store::delete_intent(c, intent))
            .await?;
        failpoint::hit("share.revert.after_commit");
        log::info!(
            "share reverted: {} ({}) to snapshot {} ({}){}",
            share.name,
            share.id,
            snap.name,
            snap.id,
            if attached.is_empty() {
                String::new()
            } else {
                format!(" while attached to {} client(s) (force)", attached.len())
            }
        );
        let reply = answer(Answer::object(&Outcome::Changed(share)))?;
        if warnings.is_empty() {
            return Ok(reply);
        }
        Ok(reply.with(
            "warnings",
            Value::Array(warnings.into_iter().map(Value::Text).collect()),
        ))
    }

    /// The snapshot `reference` names, which must be one of `share`'s own and available.
    async fn own_snapshot(&self, share: &Share, reference: &str) -> Result<Snapshot> {
        let (sid, r) = (share.id.clone(), reference.to_string());
        let snap = self
            .store
            .call(
                move |c| match store::find_snapshot(c, &r, Some(&sid), None) {
                    Err(Error::NotFound(m)) => match store::get_snapshot(c, &r)? {
                        Some(other) => Err(Error::Invalid(format!(
                            "snapshot {} ({}) belongs to share {}, not to share {sid}: a share \
                         reverts only to its own snapshots",
                            other.name, other.id, other.share_name
                        ))),
                        None => Err(Error::NotFound(m)),
                    },
                    found => found,
                },
            )
            .await?;
        if snap.state != ShareState::Available {
            return Err(Error::Busy(format!(
                "snapshot {} is {}",
                snap.name,
                snap.state.as_str()
            )));
        }
        Ok(snap)
    }

    /// Undo a revert that failed before its swap: the staged volume goes, a formatted
    /// share is mounted again (when `remount`), the intent goes.
    async fn undo_revert(&self, share: &Share, intent: i64, remount: bool, cause: Error) -> Error {
        let mut failed = Vec::new();
        if let Ok(pool) = self.pool(&share.pool) {
            let (p, id) = (pool.clone(), share.id.clone());
            if let Err(e) = blocking(move || p.revert_discard(&id)).await {
                failed.push(e);
            }
            if remount && share.layout == Layout::Filesystem {
                if let Err(e) = self.mount_share(&pool, share).await {
                    failed.push(e);
                }
            }
        }
        if let Err(e) = self
            .store
            .write(move |c| store::delete_intent(c, intent))
            .await
        {
            failed.push(e);
        }
        match failed.into_iter().next() {
            None => cause,
            Some(e) => Error::rollback(cause, e),
        }
    }

    /// After the swap: every export of the share opens the new volume. Returns warnings
    /// for those that could not (reconcile, or a retry of the revert, repairs them).
    async fn reopen_exports(&self, share: &Share) -> Vec<String> {
        let sid = share.id.clone();
        let rows = match self
            .store
            .call(move |c| store::list_exports(c, Some(&sid), None))
            .await
        {
            Ok(r) => r,
            Err(e) => return vec![e.to_string()],
        };
        let _exports = self.export_guards_for(&rows).await;
        let mut warnings = Vec::new();
        for row in rows {
            let result = match self.spec_for(&row, share) {
                Ok(spec) => self.exporter(row.export.driver).reopen(&spec).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                log::warn!(
                    "share {}: the {} export still serves the old volume: {e}",
                    share.name,
                    row.export.driver.as_str()
                );
                warnings.push(format!("{} export: {e}", row.export.driver.as_str()));
            }
        }
        warnings
    }

    /// Start-up recovery of an interrupted revert: discard what was staged (the volume is
    /// the old one), or finish a swapped one (its exports re-opened; a formatted share is
    /// mounted by the start-up that follows).
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
                for w in self.reopen_exports(&share).await {
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
        Ok(format!(
            "revert of share {} ({}) to snapshot {} was interrupted: {what}",
            share.name,
            share.id,
            intent.data["snapshot"].as_str().unwrap_or("(unknown)")
        ))
    }
}
