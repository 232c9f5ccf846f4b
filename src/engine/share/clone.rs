//! `share.clone`: a new share from a snapshot.

use crate::engine::{answer, blocking, failpoint, to_value, Engine};
use crate::error::{Error, Result};
use crate::model::{self, Outcome, Share, ShareState};
use crate::proto::{Answer, CloneArgs};
use crate::store::{self, now, AuditSlot};

impl Engine {
    /// `share.clone`: a new share from a snapshot (a job when the pool cannot reflink a
    /// block volume: the reply names it, the share still `creating`).
    pub(in crate::engine) async fn clone_share(
        &self,
        a: CloneArgs,
        slot: &AuditSlot,
    ) -> Result<Answer> {
        model::validate_name("share", &a.name)?;
        model::validate_metadata(&a.metadata)?;
        // The snapshot and its share, from the index. What the clone takes from the share
        // (sparse, multiattach, layout, filesystem) never changes; the snapshot is checked
        // again under the lock, in the transaction that reserves the clone.
        let index = self.store.index();
        let snap =
            (*index.find_snapshot(&a.snapshot, a.share.as_deref(), a.pool.as_deref())?).clone();
        let origin = index.get_share(&snap.share).ok_or_else(|| {
            Error::NotFound(format!("share {} was deleted meanwhile", snap.share))
        })?;
        // Hold the origin share's lock so the snapshot cannot be deleted under the clone.
        let _g = self.locks.lock(&snap.share).await;
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
                super::create::reserve_share(c, &room, &row)
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
                        crate::engine::snapshot::copy_job(
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
            .write_recorded(slot, move |c| {
                store::set_share_state(c, &id, ShareState::Available)
            })
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
