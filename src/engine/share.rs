//! Share operations: create, list, show, resize, delete, clone.

use ciborium::Value;

use super::{answer, blocking, failpoint, to_value, Engine};
use crate::error::{Error, Result};
use crate::model::{self, Demand, Outcome, Share, ShareState};
use crate::proto::{
    Answer, CloneArgs, ShareCreateArgs, ShareDeleteArgs, ShareListArgs, ShareRef, ShareResizeArgs,
};
use crate::store::{self, now};

/// Refuse work on a share that is being created or deleted.
pub(super) fn ensure_available(share: &Share) -> Result<()> {
    if share.state == ShareState::Available {
        return Ok(());
    }
    Err(Error::Busy(format!(
        "share {} is {}",
        share.name,
        share.state.as_str()
    )))
}

/// Is `existing` what this create asks for? Then a retry is answered with it.
fn same_share(
    existing: &Share,
    a: &ShareCreateArgs,
    sparse: bool,
    layout: (model::Layout, Option<model::FsKind>),
) -> bool {
    existing.size == a.size
        && existing.sparse == sparse
        && (existing.layout, existing.filesystem) == layout
        && existing.multiattach == a.multiattach
        && existing.origin_snapshot.is_none()
        && existing.metadata == a.metadata
}

impl Engine {
    /// `share.create`: a new share, or the same one again for a retry with the same
    /// parameters (`AlreadyThere`); other parameters under the name are `already_exists`.
    pub(super) async fn create_share(&self, a: ShareCreateArgs) -> Result<Outcome<Share>> {
        model::validate_name("share", &a.name)?;
        model::validate_size(a.size)?;
        model::validate_metadata(&a.metadata)?;
        let from_image = match &a.from_image {
            Some(r) => Some(self.image_for_share(r, a.pool.as_deref()).await?),
            None => None,
        };
        let pool = match &from_image {
            Some((image, _)) => self.pool(&image.pool)?,
            None => self.pick_pool(a.pool.as_deref())?,
        };
        let sparse = a.sparse.unwrap_or(true);
        let (layout, filesystem) =
            super::formatted::resolve_layout(a.layout, a.filesystem, self.default_fs, a.size)?;
        if let Some((image, _)) = &from_image {
            if a.size < image.size {
                return Err(Error::Invalid(format!(
                    "image {} is {} bytes; a share made from it cannot be smaller ({} asked)",
                    image.name, image.size, a.size
                )));
            }
            if layout == model::Layout::Filesystem {
                return Err(Error::Invalid(
                    "a share made from an image is a block share (the image is a disk)".into(),
                ));
            }
        }
        let share = Share {
            id: uuid::Uuid::new_v4().to_string(),
            name: a.name.clone(),
            pool: pool.name().to_string(),
            size: a.size,
            sparse,
            multiattach: a.multiattach,
            state: ShareState::Creating,
            created_at: now(),
            origin_snapshot: None,
            origin_share: None,
            metadata: a.metadata.clone(),
            layout,
            filesystem,
        };
        // Reserve the name with a `creating` row, or answer a retry with what exists.
        let row = share.clone();
        let room = self.room(&pool).await?;
        let existing = self
            .store
            .write(move |c| {
                if let Some(e) = store::get_share_by_name(c, &row.pool, &row.name)? {
                    return Ok(Some(e));
                }
                room.check(
                    c,
                    &format!("share {}", row.name),
                    Demand::Share {
                        size: row.size,
                        preallocated: !row.sparse,
                    },
                )?;
                store::insert_share(c, &row)?;
                Ok(None)
            })
            .await?;
        if let Some(e) = existing {
            return match e.state {
                ShareState::Available if same_share(&e, &a, sparse, (layout, filesystem)) => {
                    Ok(Outcome::AlreadyThere(e))
                }
                ShareState::Creating => Err(Error::Busy(format!(
                    "share {} is being created by another request",
                    e.name
                ))),
                _ => Err(Error::AlreadyExists(format!(
                    "share {} already exists in pool {} with other parameters (size {}, id {})",
                    e.name, e.pool, e.size, e.id
                ))),
            };
        }
        failpoint::hit("share.create.before_volume");
        let (p, s) = (pool.clone(), share.clone());
        let image_path = from_image.as_ref().map(|(_, path)| path.clone());
        let made = blocking(move || match image_path {
            Some(path) => p.create_from_image(&path, &s),
            None => p.create_volume(&s),
        })
        .await;
        if let Err(cause) = made {
            return Err(self.forget_share(&share, cause).await);
        }
        if share.layout == model::Layout::Filesystem {
            if let Err(cause) = self.make_filesystem(&pool, &share).await {
                return Err(self.discard_share(&pool, &share, cause).await);
            }
        }
        failpoint::hit("share.create.after_volume");
        let id = share.id.clone();
        let image_id = from_image.as_ref().map(|(i, _)| i.id.clone());
        self.store
            .write(move |c| {
                if let Some(image) = &image_id {
                    store::set_share_origin_image(c, &id, image)?;
                }
                store::set_share_state(c, &id, ShareState::Available)
            })
            .await?;
        let mut share = share;
        share.state = ShareState::Available;
        log::info!(
            "share created: {} ({}) in pool {}, {} bytes{}",
            share.name,
            share.id,
            share.pool,
            share.size,
            if share.sparse {
                ", sparse"
            } else {
                ", preallocated"
            }
        );
        Ok(Outcome::Created(share))
    }

    /// Remove the volume of a share whose filesystem could not be made, then its row.
    async fn discard_share(
        &self,
        pool: &std::sync::Arc<dyn crate::pool::Pool>,
        share: &Share,
        cause: Error,
    ) -> Error {
        let (p, id) = (pool.clone(), share.id.clone());
        let undone = match self.unmount_share(share).await {
            Ok(()) => blocking(move || p.remove_volume(&id)).await,
            Err(e) => Err(e),
        };
        match undone {
            Ok(()) => self.forget_share(share, cause).await,
            Err(e) => Error::rollback(cause, e),
        }
    }

    /// Undo a change that failed after its intent was recorded: the volume gets the row's
    /// identity back and the intent goes. Returns the error to answer with.
    pub(super) async fn restore_identity(
        &self,
        pool: &std::sync::Arc<dyn crate::pool::Pool>,
        share: &Share,
        intent: i64,
        cause: Error,
    ) -> Error {
        let (p, s) = (pool.clone(), share.clone());
        let restamp = match cause {
            // Nothing was done to a planted object, and nothing is written on it now.
            Error::Tampered(_) => Ok(()),
            _ => blocking(move || p.stamp(&s)).await,
        };
        let cleared = self
            .store
            .write(move |c| store::delete_intent(c, intent))
            .await;
        match restamp.and(cleared) {
            Ok(()) => cause,
            Err(e) => Error::rollback(cause, e),
        }
    }

    /// Drop the `creating` row of a share whose volume could not be made.
    async fn forget_share(&self, share: &Share, cause: Error) -> Error {
        let id = share.id.clone();
        match self
            .store
            .write(move |c| store::delete_share_row(c, &id))
            .await
        {
            Ok(()) => cause,
            Err(e) => Error::rollback(cause, e),
        }
    }

    /// `share.list`: the shares matching the filter.
    pub(super) async fn list_shares(&self, a: ShareListArgs) -> Result<Vec<Share>> {
        self.store
            .call(move |c| {
                store::list_shares(c, a.pool.as_deref(), a.name.as_deref(), a.id.as_deref())
            })
            .await
    }

    /// `share.show`: the share, with `device`, where its volume is on the appliance (file
    /// or block device), for local users such as the Ganeti provider; absent while the
    /// share's pool is not configured.
    pub(super) async fn show_share(&self, a: ShareRef) -> Result<Answer> {
        let share = self
            .store
            .call(move |c| store::find_share(c, &a.share, a.pool.as_deref()))
            .await?;
        let shown = answer(Answer::read(&share))?;
        Ok(match self.pool(&share.pool) {
            Ok(pool) => shown.with(
                "device",
                Value::Text(pool.volume_path(&share.id).display().to_string()),
            ),
            Err(_) => shown,
        })
    }

    /// Resolve a share reference to its id (for locking).
    pub(super) async fn share_id(&self, reference: &str, pool: Option<&str>) -> Result<String> {
        let (r, p) = (reference.to_string(), pool.map(str::to_string));
        Ok(self
            .store
            .call(move |c| store::find_share(c, &r, p.as_deref()))
            .await?
            .id)
    }

    /// The share with this id, re-read under its lock.
    pub(super) async fn share_by_id(&self, id: &str) -> Result<Share> {
        let id = id.to_string();
        self.store
            .call(move |c| {
                store::get_share(c, &id)?
                    .ok_or_else(|| Error::NotFound(format!("share {id} was deleted meanwhile")))
            })
            .await
    }

    /// `share.resize`: grow a share (`Unchanged` at its size already; shrinking is
    /// refused); `warnings` says what could not follow (an export, the filesystem).
    pub(super) async fn resize_share(&self, a: ShareResizeArgs) -> Result<Answer> {
        model::validate_size(a.size)?;
        let id = self.share_id(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let share = self.share_by_id(&id).await?;
        ensure_available(&share)?;
        if a.size < share.size {
            return Err(Error::Invalid(format!(
                "share {} is {} bytes; shrinking to {} is not supported (grow only)",
                share.name, share.size, a.size
            )));
        }
        if a.size == share.size {
            return answer(Answer::object(&Outcome::Unchanged(share)));
        }
        let pool = self.pool(&share.pool)?;
        let (sid, new_size) = (share.id.clone(), a.size);
        let room = self.room(&pool).await?;
        let share_name = share.name.clone();
        let demand = Demand::Grow {
            by: a.size - share.size,
            preallocated: !share.sparse,
        };
        let intent = self
            .store
            .write(move |c| {
                room.check(c, &format!("growing share {}", share_name), demand)?;
                let data = serde_json::json!({ "size": new_size });
                store::insert_intent(c, "share.resize", &sid, &data)
            })
            .await?;
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
        self.store
            .write(move |c| {
                store::set_share_size(c, &sid, new_size)?;
                store::delete_intent(c, intent)
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
        let warnings = self.refresh_exports(&share).await;
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
    pub(super) async fn delete_share(&self, a: ShareDeleteArgs) -> Result<Answer> {
        let id = self.share_id(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let share = self.share_by_id(&id).await?;
        let sid = share.id.clone();
        let snapshots = self
            .store
            .call(move |c| store::list_snapshots(c, Some(&sid), None))
            .await?;
        let names: Vec<&str> = snapshots.iter().map(|s| s.name.as_str()).collect();
        model::can_delete_share(&share, &names, a.recursive).map_err(|b| match b {
            model::DeleteBlocked::Busy(m) => Error::Busy(m),
            model::DeleteBlocked::HasDependents(m) => Error::HasDependents(m),
        })?;
        let sid = share.id.clone();
        let exports = self
            .store
            .call(move |c| store::list_exports(c, Some(&sid), None))
            .await?;
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
        let pool = self.pool(&share.pool)?;
        for snap in &snapshots {
            self.remove_snapshot_locked(&pool, snap).await?;
        }
        self.unmount_share(&share).await?;
        let sid = share.id.clone();
        self.store
            .write(move |c| store::set_share_state(c, &sid, ShareState::Deleting))
            .await?;
        failpoint::hit("share.delete.after_mark");
        let (p, sid) = (pool.clone(), share.id.clone());
        blocking(move || p.remove_volume(&sid)).await?;
        failpoint::hit("share.delete.after_volume");
        let sid = share.id.clone();
        self.store
            .write(move |c| store::delete_share_row(c, &sid))
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

    /// `share.clone`: a new share from a snapshot (a job when the pool cannot reflink a
    /// block volume: the reply names it, the share still `creating`).
    pub(super) async fn clone_share(&self, a: CloneArgs) -> Result<Answer> {
        model::validate_name("share", &a.name)?;
        model::validate_metadata(&a.metadata)?;
        let (r, sh, p) = (a.snapshot.clone(), a.share.clone(), a.pool.clone());
        let snap = self
            .store
            .call(move |c| store::find_snapshot(c, &r, sh.as_deref(), p.as_deref()))
            .await?;
        // Hold the origin share's lock so the snapshot cannot be deleted under the clone.
        let _g = self.locks.lock(&snap.share).await;
        let origin = self.share_by_id(&snap.share).await?;
        let pool = self.pool(&snap.pool)?;
        let share = Share {
            id: uuid::Uuid::new_v4().to_string(),
            name: a.name.clone(),
            pool: snap.pool.clone(),
            size: snap.size,
            sparse: origin.sparse,
            multiattach: origin.multiattach,
            state: ShareState::Creating,
            created_at: now(),
            origin_snapshot: Some(snap.id.clone()),
            origin_share: Some(snap.share.clone()),
            metadata: a.metadata.clone(),
            layout: origin.layout,
            filesystem: origin.filesystem,
        };
        let (row, snap_id) = (share.clone(), snap.id.clone());
        let room = self.room(&pool).await?;
        let existing = self
            .store
            .write(move |c| {
                let current = store::get_snapshot(c, &snap_id)?.ok_or_else(|| {
                    Error::NotFound(format!("snapshot {snap_id} was deleted meanwhile"))
                })?;
                if current.state != ShareState::Available {
                    return Err(Error::Busy(format!(
                        "snapshot {} is {}",
                        current.name,
                        current.state.as_str()
                    )));
                }
                if let Some(e) = store::get_share_by_name(c, &row.pool, &row.name)? {
                    return Ok(Some(e));
                }
                room.check(
                    c,
                    &format!("share {}", row.name),
                    Demand::Share {
                        size: row.size,
                        preallocated: !row.sparse,
                    },
                )?;
                store::insert_share(c, &row)?;
                Ok(None)
            })
            .await?;
        if let Some(e) = existing {
            if e.state == ShareState::Creating {
                return Err(Error::Busy(format!(
                    "share {} is being created by another request",
                    e.name
                )));
            }
            if e.state == ShareState::Available
                && e.origin_snapshot.as_deref() == Some(snap.id.as_str())
                && e.metadata == a.metadata
            {
                return answer(Answer::object(&Outcome::AlreadyThere(e)));
            }
            return Err(Error::AlreadyExists(format!(
                "share {} already exists in pool {} (id {})",
                e.name, e.pool, e.id
            )));
        }
        failpoint::hit("share.clone.before_volume");
        if !pool.reflink() && share.layout == model::Layout::Block {
            // A full copy: run it as a job (docs/protocol.md 8.27).
            let store = self.store.clone();
            let (done_id, undo_id) = (share.id.clone(), share.id.clone());
            let result = to_value(&Share {
                state: ShareState::Available,
                ..share.clone()
            });
            let (p, sn, s) = (pool.clone(), snap.clone(), share.clone());
            let size = share.size;
            let job = self
                .jobs
                .start(
                    &self.store,
                    &self.events,
                    "share.clone",
                    &share.name,
                    move |ctx| {
                        super::snapshot::copy_job(
                            ctx,
                            store,
                            size,
                            move || p.clone_volume(&sn, &s),
                            move |c: &rusqlite::Connection| {
                                store::set_share_state(c, &done_id, ShareState::Available)
                            },
                            move |c: &rusqlite::Connection| store::delete_share_row(c, &undo_id),
                            result,
                        )
                    },
                )
                .await?;
            return answer(Answer::object_by_job(&Outcome::Created(share), &job));
        }
        let (p, sn, s) = (pool.clone(), snap.clone(), share.clone());
        if let Err(cause) = blocking(move || p.clone_volume(&sn, &s)).await {
            return Err(self.forget_share(&share, cause).await);
        }
        if share.layout == model::Layout::Filesystem {
            if let Err(cause) = self.mount_share(&pool, &share).await {
                return Err(self.discard_share(&pool, &share, cause).await);
            }
        }
        failpoint::hit("share.clone.after_volume");
        let id = share.id.clone();
        self.store
            .write(move |c| store::set_share_state(c, &id, ShareState::Available))
            .await?;
        let mut share = share;
        share.state = ShareState::Available;
        log::info!(
            "share cloned: {} ({}) from snapshot {} of share {}",
            share.name,
            share.id,
            snap.name,
            snap.share_name
        );
        answer(Answer::object(&Outcome::Created(share)))
    }
}
