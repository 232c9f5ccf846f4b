//! Start-up recovery: finish or undo what a crash interrupted, before the socket opens.
//!
//! Rules: a `creating` share, snapshot or export was never acknowledged, so it is undone
//! (its files or driver objects removed, then its row). A `deleting` one was on its way
//! out, so the delete is finished. An unfinished resize is rolled forward (growing is
//! idempotent). An attach whose intent is still journaled was never acknowledged, so its
//! attachment row goes; a journaled detach is finished (the row goes too): revoked access
//! is never granted again. Data that a settled row references is never touched.
//!
//! Recovery settles rows; the reconcile that shelfd runs right after it brings tgtd and
//! the exports files in line with them (e.g. the ACL entry of an undone attach). Driver
//! objects of an export row recovery deletes are removed here, as no row names them
//! afterwards. See docs/exports.md, "Crash safety of exports and attachments".

use super::attach::{ATTACH_INTENT, DETACH_INTENT};
use super::{blocking, failpoint, Engine};
use crate::error::{Error, Result};
use crate::model::{PoolKind, ShareState};
use crate::store;

/// What recovery did, for the log and the `reconcile` reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// One line per action taken.
    pub actions: Vec<String>,
}

impl Engine {
    /// Finish or undo every interrupted operation.
    pub async fn recover(&self) -> Result<Recovery> {
        let mut out = Recovery::default();
        // Before anything opens a volume (which reads only trusted.shelf.*).
        self.move_legacy_stamps(&mut out).await?;
        // Access first, so that what the drivers are told below already leaves out an
        // undone attach and a finished detach.
        self.replay_intents(&mut out, |op| op == ATTACH_INTENT || op == DETACH_INTENT)
            .await?;
        // File-based drivers (exports file, ganesha include) rewrite their whole file on
        // every change: they must know the settled exports before recovery removes an
        // interrupted one, or the rewrite drops every committed export with it.
        self.load_exports().await?;
        for row in self
            .store
            .call(|c| store::list_exports(c, None, None))
            .await?
        {
            if !matches!(
                row.export.state,
                ShareState::Creating | ShareState::Deleting
            ) {
                continue;
            }
            let sid = row.export.share.clone();
            let share = self.store.call(move |c| store::get_share(c, &sid)).await?;
            if let Some((share, spec)) =
                share.and_then(|sh| self.spec_for(&row, &sh).ok().map(|sp| (sh, sp)))
            {
                // A driver that is down now cannot be asked; the row goes anyway, and the
                // next reconcile removes what the daemon still holds under shelf's naming.
                if let Err(e) = self.exporter(row.export.driver).remove(&spec).await {
                    out.actions.push(format!(
                        "{} export of share {}: could not be removed from {} now ({e}); \
                         reconcile will remove it",
                        row.export.protocol.as_str(),
                        share.name,
                        row.export.driver.as_str()
                    ));
                }
            }
            let (eid, sid, proto) = (
                row.export.id.clone(),
                row.export.share.clone(),
                row.export.protocol,
            );
            self.store
                .write(move |c| store::delete_export_and_attachments(c, &eid, &sid, proto))
                .await?;
            out.actions.push(format!(
                "{} export {} of share {} was {} at the crash: removed",
                row.export.protocol.as_str(),
                row.export.target,
                row.export.share_name,
                row.export.state.as_str()
            ));
        }
        let (shares, snaps) = self.store.call(|c| store::unsettled(c)).await?;
        for snap in snaps {
            let Ok(pool) = self.pool(&snap.pool) else {
                out.actions.push(format!(
                    "snapshot {} ({}) is {} in pool {}, which is not configured: left as is",
                    snap.name,
                    snap.id,
                    snap.state.as_str(),
                    snap.pool
                ));
                continue;
            };
            let (p, id) = (pool.clone(), snap.id.clone());
            blocking(move || p.remove_snapshot(&id)).await?;
            let id = snap.id.clone();
            self.store
                .write(move |c| store::delete_snapshot_row(c, &id))
                .await?;
            out.actions.push(format!(
                "snapshot {} ({}) of share {} was {} at the crash: removed",
                snap.name,
                snap.id,
                snap.share_name,
                snap.state.as_str()
            ));
        }
        for share in shares {
            let Ok(pool) = self.pool(&share.pool) else {
                out.actions.push(format!(
                    "share {} ({}) is {} in pool {}, which is not configured: left as is",
                    share.name,
                    share.id,
                    share.state.as_str(),
                    share.pool
                ));
                continue;
            };
            let sid = share.id.clone();
            let leftovers = self
                .store
                .call(move |c| store::list_snapshots(c, Some(&sid), None))
                .await?;
            if share.state == ShareState::Creating && !leftovers.is_empty() {
                return Err(Error::Internal(format!(
                    "share {} is creating but has snapshots; refusing to guess",
                    share.id
                )));
            }
            for snap in leftovers {
                self.remove_snapshot_locked(&pool, &snap).await?;
            }
            self.unmount_share(&share).await?;
            let (p, id) = (pool.clone(), share.id.clone());
            blocking(move || p.remove_volume(&id)).await?;
            let id = share.id.clone();
            self.store
                .write(move |c| store::delete_share_row(c, &id))
                .await?;
            out.actions.push(format!(
                "share {} ({}) was {} at the crash: {}",
                share.name,
                share.id,
                share.state.as_str(),
                if share.state == ShareState::Creating {
                    "creation undone"
                } else {
                    "deletion finished"
                }
            ));
        }
        self.replay_intents(&mut out, |_| true).await?;
        let configured = self.pool_names();
        let missing: Vec<String> = self
            .store
            .call(|c| store::pools_in_use(c))
            .await?
            .into_iter()
            .filter(|p| !configured.contains(p))
            .collect();
        for p in missing {
            log::warn!(
                "the database has shares in pool {p}, which the config does not name; they \
                 cannot be used until the pool is configured again"
            );
        }
        out.actions.extend(self.recover_images().await?);
        out.actions.extend(self.recover_receives().await?);
        for a in &out.actions {
            log::warn!("recovery: {a}");
        }
        failpoint::hit(failpoint::RECOVER_DONE);
        Ok(out)
    }

    /// Once, at the first start-up after the upgrade: move every stamp an earlier shelf
    /// wrote in `user.shelf.*` (which a tenant's NFS client can read and write) to
    /// `trusted.shelf.*`, writing the database's view of each share and snapshot, its
    /// exports record included, never the `user.*` values. A crash midway repeats it: a
    /// file that already has its trusted stamp only loses its leftover `user.shelf.*`.
    /// After one complete pass the database's `legacy_stamps_moved` flag is set (a
    /// database created by this version has it from the start) and `user.shelf.*` is
    /// never read again: a file a tenant puts in a volume's place later, stamped in
    /// `user.shelf.*`, stays tampered.
    async fn move_legacy_stamps(&self, out: &mut Recovery) -> Result<()> {
        let moved = self
            .store
            .call(|c| store::get_setting(c, store::LEGACY_STAMPS_MOVED))
            .await?;
        if moved.is_some() {
            return Ok(());
        }
        let (shares, snaps) = self
            .store
            .call(|c| store::all_shares_and_snapshots(c))
            .await?;
        // A pool the config does not name cannot be looked at now: the pass is not
        // complete, and the flag waits for a start-up that sees every pool.
        let unconfigured: std::collections::BTreeSet<String> = shares
            .iter()
            .map(|s| s.pool.clone())
            .chain(snaps.iter().map(|s| s.pool.clone()))
            .filter(|p| self.pool(p).is_err())
            .collect();
        // Only a file pool's files carry extended attributes (an LVM pool's: tags).
        let file_pool = |name: &str| self.pool(name).ok().filter(|p| p.kind() == PoolKind::File);
        let shares: Vec<_> = shares
            .into_iter()
            .filter_map(|s| file_pool(&s.pool).map(|p| (p, s)))
            .collect();
        let snaps: Vec<_> = snaps
            .into_iter()
            .filter_map(|s| file_pool(&s.pool).map(|p| (p, s)))
            .collect();
        // First only look (one open and listxattr per file), so that the exports record
        // is read from the database only for the shares that need it.
        let (shares, snaps) = blocking(move || {
            let shares: Vec<_> = shares
                .into_iter()
                .filter(|(p, s)| p.has_legacy_stamp("share", &s.id))
                .collect();
            let snaps: Vec<_> = snaps
                .into_iter()
                .filter(|(p, s)| p.has_legacy_stamp("snapshot", &s.id))
                .collect();
            (shares, snaps)
        })
        .await;
        let mut moves = Vec::new();
        for (pool, share) in shares {
            let mut attrs = crate::pool::share_identity(&share);
            attrs.insert("exports".into(), self.exports_record(&share, None).await?);
            moves.push((pool, "share", share.id, attrs));
        }
        for (pool, snap) in snaps {
            let attrs = crate::pool::snapshot_identity(&snap);
            moves.push((pool, "snapshot", snap.id, attrs));
        }
        let lines = blocking(move || -> Result<Vec<String>> {
            let mut lines = Vec::new();
            for (pool, kind, id, attrs) in moves {
                lines.extend(pool.move_legacy_stamp(kind, &id, &attrs)?);
            }
            Ok(lines)
        })
        .await?;
        out.actions.extend(lines);
        if unconfigured.is_empty() {
            self.store
                .write(|c| store::set_setting(c, store::LEGACY_STAMPS_MOVED, "moved"))
                .await?;
            out.actions.push(
                "the move of user.shelf.* stamps to trusted.shelf.* is complete: from now \
                 on user.shelf.* attributes are ignored"
                    .into(),
            );
        } else {
            log::warn!(
                "the move of user.shelf.* stamps to trusted.shelf.* waits for pool(s) {}, \
                 which the config does not name; it runs again at the next start-up",
                unconfigured.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    }

    /// Replay, then forget, every journaled intent whose op `pick` accepts (oldest first).
    /// Each replay is idempotent, so a crash between the two repeats it harmlessly.
    async fn replay_intents(&self, out: &mut Recovery, pick: impl Fn(&str) -> bool) -> Result<()> {
        for intent in self.store.call(|c| store::list_intents(c)).await? {
            if !pick(&intent.op) {
                continue;
            }
            let action = self.replay_intent(&intent).await?;
            let id = intent.id;
            self.store
                .write(move |c| store::delete_intent(c, id))
                .await?;
            out.actions.push(action);
        }
        Ok(())
    }

    async fn replay_intent(&self, intent: &store::Intent) -> Result<String> {
        match intent.op.as_str() {
            "share.resize" => {
                let size = intent.data["size"].as_u64().ok_or_else(|| {
                    Error::Internal(format!("resize intent {} has no size", intent.id))
                })?;
                let id = intent.object.clone();
                let Some(share) = self.store.call(move |c| store::get_share(c, &id)).await? else {
                    return Ok(format!(
                        "resize of vanished share {} dropped",
                        intent.object
                    ));
                };
                let pool = self.pool(&share.pool)?;
                let (p, s) = (pool.clone(), share.clone());
                blocking(move || p.grow(&s, size)).await?;
                let id = share.id.clone();
                self.store
                    .write(move |c| store::set_share_size(c, &id, size))
                    .await?;
                Ok(format!(
                    "resize of share {} ({}) to {size} bytes was interrupted: finished",
                    share.name, share.id
                ))
            }
            super::metadata::SET_METADATA_INTENT => self.undo_set_metadata(&intent.object).await,
            super::receive::RECEIVE_INTENT => self.replay_receive(intent).await,
            super::attach::RESTAMP_INTENT => self.replay_restamp(intent).await,
            ATTACH_INTENT | DETACH_INTENT => {
                // Rows are the truth for access lists: the start-up reconcile that follows
                // recovery brings tgtd and the exports files in line with them.
                let id = intent.object.clone();
                let gone = self
                    .store
                    .write(move |c| {
                        let found = store::list_attachments(c, None)?
                            .into_iter()
                            .find(|a| a.id == id);
                        store::delete_attachment_row(c, &id)?;
                        Ok(found)
                    })
                    .await?;
                let what = if intent.op == ATTACH_INTENT {
                    "attach was never acknowledged: undone"
                } else {
                    "detach was under way: finished"
                };
                if let Some(a) = &gone {
                    // The volume's record of its attachments follows the rows.
                    let sid = a.share.clone();
                    if let Some(share) = self.store.call(move |c| store::get_share(c, &sid)).await?
                    {
                        self.stamp_exports(&share).await;
                    }
                }
                Ok(match gone {
                    Some(a) => format!(
                        "{} {} of share {} to host {} ({}): {what}",
                        a.protocol.as_str(),
                        intent.op,
                        a.share_name,
                        a.host,
                        a.client
                    ),
                    None => format!("{} of attachment {}: {what}", intent.op, intent.object),
                })
            }
            other => Err(Error::Internal(format!(
                "unknown intent {other:?} (id {}) in the journal; a newer shelfd wrote it",
                intent.id
            ))),
        }
    }
}
