//! `share.resize` and `share.delete`.

use ciborium::Value;

use super::ensure_available;
use crate::engine::{answer, blocking, failpoint, Engine};
use crate::error::{Error, Result};
use crate::model::{self, Demand, Outcome, ShareState};
use crate::proto::{Answer, ShareDeleteArgs, ShareResizeArgs};
use crate::store::{self, AuditSlot};

impl Engine {
    /// `share.resize`: grow a share (`Unchanged` at its size already; shrinking is
    /// refused); `warnings` says what could not follow (an export, the filesystem).
    pub(in crate::engine) async fn resize_share(
        &self,
        a: ShareResizeArgs,
        slot: &AuditSlot,
    ) -> Result<Answer> {
        model::validate_size(a.size)?;
        // A share's pool never changes: its room is read before the lock is taken.
        let (id, pool_name) = self.share_id_and_pool(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let pool = self.pool(&pool_name)?;
        let room = self.room(&pool).await?;
        let new_size = a.size;
        // The share is re-read under its lock in the transaction that journals the grow.
        let (share, intent) = self
            .store
            .write(move |c| {
                let share = store::get_share(c, &id)?
                    .ok_or_else(|| Error::NotFound(format!("share {id} was deleted meanwhile")))?;
                ensure_available(&share)?;
                if new_size < share.size {
                    return Err(Error::Invalid(format!(
                        "share {} is {} bytes; shrinking to {new_size} is not supported (grow only)",
                        share.name, share.size
                    )));
                }
                if new_size == share.size {
                    return Ok((share, None));
                }
                let demand = Demand::Grow {
                    by: new_size - share.size,
                    preallocated: !share.sparse,
                };
                room.check(c, &format!("growing share {}", share.name), demand)?;
                let data = serde_json::json!({ "size": new_size });
                let intent = store::insert_intent(c, "share.resize", &share.id, &data)?;
                Ok((share, Some(intent)))
            })
            .await?;
        let Some(intent) = intent else {
            return answer(Answer::object(&Outcome::Unchanged(share)));
        };
        failpoint::hit("share.resize.after_intent");
        let (p, s) = (pool.clone(), share.clone());
        let grown = blocking(move || p.grow(&s, new_size)).await;
        if let Err(cause) = grown {
            // Growing never loses data; the file may be partly grown, which is harmless:
            // the volume keeps its recorded size's worth of addressable data.
            return Err(self.restore_identity(&pool, &share, intent, cause).await);
        }
        failpoint::hit("share.resize.after_grow");
        let sid = share.id.clone();
        let exports = self
            .store
            .write_recorded(slot, move |c| {
                store::set_share_size(c, &sid, new_size)?;
                store::delete_intent(c, intent)?;
                store::list_exports(c, Some(&sid), None)
            })
            .await?;
        log::info!(
            "share resized: {} ({}) {} -> {} bytes",
            share.name,
            share.id,
            share.size,
            a.size
        );
        let mut share = share;
        share.size = a.size;
        let warnings = self.refresh_exports(&share, exports).await;
        let mut warnings = warnings;
        warnings.extend(self.grow_filesystem(&share).await);
        let reply = answer(Answer::object(&Outcome::Changed(share)))?;
        if warnings.is_empty() {
            return Ok(reply);
        }
        Ok(reply.with(
            "warnings",
            Value::Array(warnings.into_iter().map(Value::Text).collect()),
        ))
    }

    /// `share.delete`: remove a share (with `recursive`, its snapshots too); refused while
    /// it has exports, attachments or (without `recursive`) snapshots.
    pub(in crate::engine) async fn delete_share(
        &self,
        a: ShareDeleteArgs,
        slot: &AuditSlot,
    ) -> Result<Answer> {
        let (id, pool_name) = self.share_id_and_pool(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let pool = self.pool(&pool_name)?;
        let recursive = a.recursive;
        // The share, its snapshots and its exports, re-read under its lock in one
        // transaction; a block share with nothing to remove first is marked `deleting` in
        // it too (the journaled intent: recovery finishes the removal).
        let (share, snapshots, exports, marked) = self
            .store
            .write(move |c| {
                let share = store::get_share(c, &id)?
                    .ok_or_else(|| Error::NotFound(format!("share {id} was deleted meanwhile")))?;
                let snapshots = store::list_snapshots(c, Some(&id), None)?;
                if let Some(member) = snapshots.iter().find(|s| recursive && s.group.is_some()) {
                    // A member goes with its group only (as `snapshot.delete` says): a
                    // group missing a member is no longer the image of its shares at one
                    // instant.
                    let gid = member.group.clone().unwrap_or_default();
                    let name = store::get_group(c, &gid)?.map_or(gid, |g| g.name);
                    return Err(Error::HasDependents(format!(
                        "snapshot {} of share {} is a member of group snapshot {name:?}; \
                         delete the group (group_snapshot.delete {name:?}) first, then the \
                         share with its other snapshots",
                        member.name, share.name
                    )));
                }
                let exports = store::list_exports(c, Some(&id), None)?;
                let marked = snapshots.is_empty()
                    && exports.is_empty()
                    && share.layout == model::Layout::Block
                    && model::can_delete_share(&share, &[], recursive).is_ok();
                if marked {
                    store::set_share_state(c, &id, ShareState::Deleting)?;
                }
                Ok((share, snapshots, exports, marked))
            })
            .await?;
        let names: Vec<&str> = snapshots.iter().map(|s| s.name.as_str()).collect();
        model::can_delete_share(&share, &names, a.recursive).map_err(|b| match b {
            model::DeleteBlocked::Busy(m) => Error::Busy(m),
            model::DeleteBlocked::HasDependents(m) => Error::HasDependents(m),
        })?;
        if !exports.is_empty() && !a.force {
            let attached: Vec<String> = exports
                .iter()
                .flat_map(|e| e.export.attached.iter().map(|x| x.client.clone()))
                .collect();
            return Err(Error::HasDependents(format!(
                "share {} has {} export(s) ({}){}; delete them first or pass force: true",
                share.name,
                exports.len(),
                exports
                    .iter()
                    .map(|e| e.export.protocol.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if attached.is_empty() {
                    String::new()
                } else {
                    format!(" attached by {}", attached.join(", "))
                }
            )));
        }
        let guards = self.export_guards_for(&exports).await;
        for row in &exports {
            self.remove_export_locked(&share, row, true, failpoint::SHARE_DELETE_EXPORT)
                .await?;
        }
        drop(guards);
        for snap in &snapshots {
            self.remove_snapshot_locked(&pool, snap, &AuditSlot::default())
                .await?;
        }
        if !marked {
            self.unmount_share(&share).await?;
            let sid = share.id.clone();
            self.store
                .write(move |c| store::set_share_state(c, &sid, ShareState::Deleting))
                .await?;
        }
        failpoint::hit("share.delete.after_mark");
        let (p, sid) = (pool.clone(), share.id.clone());
        blocking(move || p.remove_volume(&sid)).await?;
        failpoint::hit("share.delete.after_volume");
        let sid = share.id.clone();
        self.store
            .write_recorded(slot, move |c| store::delete_share_row(c, &sid))
            .await?;
        log::info!(
            "share deleted: {} ({}) from pool {}{}",
            share.name,
            share.id,
            share.pool,
            if snapshots.is_empty() {
                String::new()
            } else {
                format!(" with {} snapshot(s)", snapshots.len())
            }
        );
        Ok(Answer::share_deleted(
            &Outcome::Deleted(share.id.clone()),
            snapshots.len(),
        ))
    }
}
