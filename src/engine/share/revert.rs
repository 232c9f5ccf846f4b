//! `share.revert`: the share's content becomes one of its own snapshots'.
//!
//! Steps, each journaled under one `share.revert` intent (its id is the revert's tag):
//! stage (the pool makes a new volume with the snapshot's content beside the old one),
//! withdraw the NFS exports of a formatted share (they export its mounted filesystem, so
//! they hold it busy and would point at the unmounted one), unmount it, swap (one atomic
//! rename on a file pool), re-open the exports that hold the old volume open (tgt and LIO
//! LUNs re-created, nvmet namespaces re-enabled; an NFS export of a block share keeps its
//! directory), mount again and add the withdrawn exports back, forget the intent. A crash
//! before the swap leaves the old content (recovery discards the staged volume), after it
//! the new one (recovery re-opens the exports); a withdrawn export keeps its row, so the
//! reconcile that follows the start-up mounts adds it back.

use ciborium::Value;

use super::ensure_available;
use super::revert_exports::{serves_mount, Steps, WITHDRAW_POINT};
use crate::engine::{answer, blocking, failpoint, Engine};
use crate::error::{Error, Result};
use crate::model::{Attachment, Layout, Outcome, Share, ShareState, Snapshot};
use crate::proto::{Answer, ShareRevertArgs};
use crate::store::{self, ExportRow};

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
        let attached = self.check_attached(&share, a.force).await?;
        let pool = self.pool(&share.pool)?;
        let sid = share.id.clone();
        let rows = self
            .store
            .call(move |c| store::list_exports(c, Some(&sid), None))
            .await?;
        // Held to the end: no reconcile adds a withdrawn export back while unmounted.
        let _exports = self.export_guards_for(&rows).await;
        let (mounted, others): (Vec<ExportRow>, Vec<ExportRow>) =
            rows.into_iter().partition(|r| serves_mount(&share, r));
        let withdrawn: Vec<&str> = mounted.iter().map(|r| r.export.protocol.as_str()).collect();
        let data = serde_json::json!({ "snapshot": snap.id, "withdrawn": withdrawn });
        let sid = share.id.clone();
        let intent = self
            .store
            .write(move |c| store::insert_intent(c, REVERT_INTENT, &sid, &data))
            .await?;
        failpoint::hit("share.revert.after_intent");
        let steps = Steps {
            pool: &pool,
            share: &share,
            snap: &snap,
            intent,
            mounted: &mounted,
            others: &others,
        };
        let warnings = self.revert_steps(&steps).await?;
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

    /// The share's attachments; `busy` when there are some and the revert is not forced.
    async fn check_attached(&self, share: &Share, force: bool) -> Result<Vec<Attachment>> {
        let sid = share.id.clone();
        let attached = self
            .store
            .call(move |c| store::list_attachments(c, Some(&sid)))
            .await?;
        if !attached.is_empty() && !force {
            let hosts: Vec<&str> = attached.iter().map(|x| x.host.as_str()).collect();
            return Err(Error::Busy(format!(
                "share {} is attached to {}; detach it first or pass force: true (its \
                 clients then see the content change under them)",
                share.name,
                hosts.join(", ")
            )));
        }
        Ok(attached)
    }

    /// Stage, withdraw, unmount, swap, re-open, mount, re-add (the module's steps). Before
    /// the swap a failure is undone; after it, what could not follow is a warning.
    async fn revert_steps(&self, s: &Steps<'_>) -> Result<Vec<String>> {
        let (p, sh, sn, t) = (
            s.pool.clone(),
            s.share.clone(),
            s.snap.clone(),
            s.intent.to_string(),
        );
        if let Err(cause) = blocking(move || p.revert_stage(&sh, &sn, &t)).await {
            return Err(self.undo_revert(s, false, &[], cause).await);
        }
        failpoint::hit("share.revert.after_stage");
        if let Err(cause) = self.withdraw_exports(s.share, s.mounted).await {
            return Err(self.undo_revert(s, false, s.mounted, cause).await);
        }
        failpoint::hit(WITHDRAW_POINT);
        if let Err(cause) = self.unmount_share(s.share).await {
            // Mounted again if the unmount got that far (a no-op when it did not).
            return Err(self.undo_revert(s, true, s.mounted, cause).await);
        }
        let (p, sh) = (s.pool.clone(), s.share.clone());
        if let Err(cause) = blocking(move || p.revert_swap(&sh)).await {
            return Err(self.undo_revert(s, true, s.mounted, cause).await);
        }
        failpoint::hit("share.revert.after_swap");
        let mut warnings = self.reopen_exports(s.share, s.others).await;
        let (p, sid) = (s.pool.clone(), s.share.id.clone());
        if let Err(e) = blocking(move || p.revert_finish(&sid)).await {
            warnings.push(format!(
                "share {}: reverted, but the old volume was not removed ({e}); the next \
                 revert or start-up recovery removes it",
                s.share.name
            ));
        }
        if s.share.layout == Layout::Filesystem {
            match self.mount_share(s.pool, s.share).await {
                Ok(()) => {
                    warnings.extend(self.grow_filesystem(s.share).await);
                    warnings.extend(self.readd_exports(s.share, s.mounted).await);
                }
                Err(e) => warnings.push(format!(
                    "share {}: reverted, but its filesystem did not mount ({e}); the next \
                     start-up mounts it again{}",
                    s.share.name,
                    if s.mounted.is_empty() {
                        ""
                    } else {
                        " and its reconcile adds the NFS export back"
                    }
                )),
            }
        }
        Ok(warnings)
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
    /// share is mounted again (when `remount`) and its withdrawn exports (`readd`) added
    /// back, the intent goes.
    async fn undo_revert(
        &self,
        s: &Steps<'_>,
        remount: bool,
        readd: &[ExportRow],
        cause: Error,
    ) -> Error {
        let mut failed = Vec::new();
        let (p, id) = (s.pool.clone(), s.share.id.clone());
        if let Err(e) = blocking(move || p.revert_discard(&id)).await {
            failed.push(e);
        }
        let mut mounted = true;
        if remount && s.share.layout == Layout::Filesystem {
            if let Err(e) = self.mount_share(s.pool, s.share).await {
                mounted = false;
                failed.push(e);
            }
        }
        if mounted {
            for row in readd {
                if let Err(e) = self.apply_export(s.share, row).await {
                    failed.push(e);
                }
            }
        }
        let intent = s.intent;
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

    /// After the swap: every export in `rows` opens the new volume (the caller holds their
    /// drivers' guards). Returns warnings for those that could not (reconcile, or a retry
    /// of the revert, repairs them).
    pub(super) async fn reopen_exports(&self, share: &Share, rows: &[ExportRow]) -> Vec<String> {
        let mut warnings = Vec::new();
        for row in rows {
            let result = match self.spec_for(row, share) {
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
}
