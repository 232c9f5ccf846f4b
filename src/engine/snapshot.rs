//! Snapshot operations, and the lineage tree.

use std::sync::Arc;

use ciborium::Value;

use super::share::read_list;
use super::{answer, blocking, failpoint, to_value, Engine};
use crate::error::{Error, Result};
use crate::model::{self, Demand, Outcome, ShareState, Snapshot};
use crate::pool::Pool;
use crate::proto::{Answer, SnapshotCreateArgs, SnapshotListArgs, SnapshotRef, TreeArgs};
use crate::store::{self, now, AuditSlot};

impl Engine {
    /// `snapshot.create`: a point-in-time copy of a share (a job on a pool that cannot
    /// reflink); the same name again is answered with the snapshot that exists.
    pub(super) async fn create_snapshot(
        &self,
        a: SnapshotCreateArgs,
        slot: &AuditSlot,
    ) -> Result<Answer> {
        model::validate_name("snapshot", &a.name)?;
        // A share's pool never changes: its room is read before the lock is taken.
        let (id, pool_name) = self.share_id_and_pool(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let pool = self.pool(&pool_name)?;
        let room = self.room(&pool).await?;
        let (snap_id, name) = (uuid::Uuid::new_v4().to_string(), a.name.clone());
        // The share is re-read under its lock in the transaction that records the snapshot
        // (its size and state are as of that commit).
        let (share, snap, existing) = self
            .store
            .write(move |c| {
                let share = store::get_share(c, &id)?
                    .ok_or_else(|| Error::NotFound(format!("share {id} was deleted meanwhile")))?;
                super::share::ensure_available(&share)?;
                let snap = Snapshot {
                    id: snap_id,
                    name,
                    share: share.id.clone(),
                    share_name: share.name.clone(),
                    pool: share.pool.clone(),
                    size: share.size,
                    state: ShareState::Creating,
                    created_at: now(),
                    group: None,
                };
                let found = store::get_snapshot_by_name(c, &snap.share, &snap.name)?;
                if found.is_none() {
                    room.check(
                        c,
                        &format!("snapshot {}@{}", snap.share_name, snap.name),
                        Demand::Snapshot,
                    )?;
                    store::insert_snapshot(c, &snap)?;
                }
                Ok((share, snap, found))
            })
            .await?;
        if let Some(e) = existing {
            // The same name on the same share: a retry. It is answered with the snapshot
            // that exists (its content is from its own time, which the first reply promised).
            return match e.state {
                ShareState::Available => answer(Answer::object(&Outcome::AlreadyThere(e))),
                _ => Err(Error::Busy(format!(
                    "snapshot {} is {}",
                    e.name,
                    e.state.as_str()
                ))),
            };
        }
        failpoint::hit("snapshot.create.before_copy");
        if !pool.reflink() && share.layout == model::Layout::Block {
            return self.snapshot_as_job(pool, share, snap).await;
        }
        let (p, sh, sn) = (pool.clone(), share.clone(), snap.clone());
        let t0 = std::time::Instant::now();
        let copied = self
            .frozen(&pool, &share, blocking(move || p.snapshot(&sh, &sn)))
            .await;
        if let Err(cause) = copied {
            let sid = snap.id.clone();
            return Err(
                match self
                    .store
                    .write(move |c| store::delete_snapshot_row(c, &sid))
                    .await
                {
                    Ok(()) => cause,
                    Err(e) => Error::rollback(cause, e),
                },
            );
        }
        let took = t0.elapsed();
        failpoint::hit("snapshot.create.after_copy");
        let sid = snap.id.clone();
        self.store
            .write_recorded(slot, move |c| {
                store::set_snapshot_state(c, &sid, ShareState::Available)
            })
            .await?;
        let mut snap = snap;
        snap.state = ShareState::Available;
        log::info!(
            "snapshot created: {} ({}) of share {} in {:.3} ms ({})",
            snap.name,
            snap.id,
            share.name,
            took.as_secs_f64() * 1000.0,
            if pool.reflink() { "reflink" } else { "copy" }
        );
        answer(Answer::object(&Outcome::Created(snap)))
    }

    /// On a pool that cannot reflink, a snapshot is a full copy: it runs as a job, and the
    /// reply carries the job id with the snapshot still `creating` (docs/protocol.md 8.27).
    async fn snapshot_as_job(
        &self,
        pool: Arc<dyn Pool>,
        share: model::Share,
        snap: Snapshot,
    ) -> Result<Answer> {
        let store = self.store.clone();
        let target = format!("{}@{}", share.name, snap.name);
        let (done_id, undo_id) = (snap.id.clone(), snap.id.clone());
        let result = to_value(&Snapshot {
            state: ShareState::Available,
            ..snap.clone()
        });
        let job_snap = snap.clone();
        let job = self
            .jobs
            .start(
                &self.store,
                &self.events,
                "snapshot.create",
                &target,
                move |ctx| {
                    copy_job(
                        ctx,
                        store,
                        share.size,
                        move || pool.snapshot(&share, &job_snap),
                        move |c: &rusqlite::Connection| {
                            store::set_snapshot_state(c, &done_id, ShareState::Available)
                        },
                        move |c: &rusqlite::Connection| store::delete_snapshot_row(c, &undo_id),
                        result,
                    )
                },
            )
            .await?;
        answer(Answer::object_by_job(&Outcome::Created(snap), &job))
    }

    /// `snapshot.list`: the snapshots of a share, or of every share, from the index.
    pub(super) async fn list_snapshots(&self, a: SnapshotListArgs) -> Result<Answer> {
        let snaps = self
            .store
            .index()
            .list_snapshots_of(a.share.as_deref(), a.pool.as_deref())?;
        read_list(snaps.len(), move || Answer::list(&snaps)).await
    }

    /// `snapshot.show`: one snapshot, from the index.
    pub(super) fn show_snapshot(&self, a: SnapshotRef) -> Result<Arc<Snapshot>> {
        self.store
            .index()
            .find_snapshot(&a.snapshot, a.share.as_deref(), a.pool.as_deref())
    }

    /// `snapshot.delete`: remove a snapshot (clones made from it are not touched).
    pub(super) async fn delete_snapshot(
        &self,
        a: SnapshotRef,
        slot: &AuditSlot,
    ) -> Result<Outcome<String>> {
        // From the index, which holds every committed write (the lock holder's included).
        let index = self.store.index();
        let snap = index.find_snapshot(&a.snapshot, a.share.as_deref(), a.pool.as_deref())?;
        let _g = self.locks.lock(&snap.share).await;
        let snap = index
            .get_snapshot(&snap.id)
            .map(|s| (*s).clone())
            .ok_or_else(|| {
                Error::NotFound(format!("snapshot {} was deleted meanwhile", snap.id))
            })?;
        if snap.state == ShareState::Creating {
            return Err(Error::Busy(format!(
                "snapshot {} is still being created",
                snap.name
            )));
        }
        if let Some(gid) = snap.group.clone() {
            // A member goes with its group only: a group missing a member is no longer
            // the image of its shares at one instant.
            let group = self.store.call(move |c| store::get_group(c, &gid)).await?;
            let name = group.map_or_else(|| snap.group.clone().unwrap_or_default(), |g| g.name);
            return Err(Error::HasDependents(format!(
                "snapshot {} of share {} is a member of group snapshot {name}; delete the \
                 group (group_snapshot.delete {name}) to remove all its members",
                snap.name, snap.share_name
            )));
        }
        let pool = self.pool(&snap.pool)?;
        self.remove_snapshot_locked(&pool, &snap, slot).await?;
        Ok(Outcome::Deleted(snap.id.clone()))
    }

    /// Remove one snapshot; the caller holds its share's lock. Clones made from it are
    /// independent copies and are not touched; they keep recording it as their origin.
    /// The last commit writes the audit entry waiting in `slot`, if any.
    pub(super) async fn remove_snapshot_locked(
        &self,
        pool: &Arc<dyn Pool>,
        snap: &Snapshot,
        slot: &AuditSlot,
    ) -> Result<()> {
        self.exporting.refuse_if_held(snap)?;
        let sid = snap.id.clone();
        self.store
            .write(move |c| store::set_snapshot_state(c, &sid, ShareState::Deleting))
            .await?;
        failpoint::hit("snapshot.delete.after_mark");
        let (p, sid) = (pool.clone(), snap.id.clone());
        blocking(move || p.remove_snapshot(&sid)).await?;
        failpoint::hit("snapshot.delete.after_file");
        let sid = snap.id.clone();
        self.store
            .write_recorded(slot, move |c| store::delete_snapshot_row(c, &sid))
            .await?;
        log::info!(
            "snapshot deleted: {} ({}) of share {}",
            snap.name,
            snap.id,
            snap.share_name
        );
        Ok(())
    }

    /// `tree`: the share → snapshot → clone lineage, from the index.
    pub(super) async fn tree(&self, a: TreeArgs) -> Result<Answer> {
        let (shares, snaps) = self.store.index().shares_and_snapshots(a.pool.as_deref());
        read_list(shares.len() + snaps.len(), move || {
            Answer::list(&model::build_tree(&shares, &snaps))
        })
        .await
    }
}

/// The body of a copy job (snapshot or clone on a pool that cannot reflink): copy, then
/// commit `done` (the object becomes `available`), or on failure undo with `undo` (the
/// pool's copy cleans its own partial files). Progress is the object's size, reported at
/// the end: the copy itself does not report.
pub(super) async fn copy_job(
    ctx: super::jobs::JobCtx,
    store: crate::store::Store,
    size: u64,
    copy: impl FnOnce() -> Result<()> + Send + 'static,
    done: impl FnOnce(&rusqlite::Connection) -> Result<()> + Send + 'static,
    undo: impl FnOnce(&rusqlite::Connection) -> Result<()> + Send + 'static,
    result: Result<Value>,
) -> Result<Value> {
    ctx.set_total(size);
    match blocking(copy).await {
        Ok(()) => {
            store.write(move |c| done(c)).await?;
            ctx.progress(size);
            result
        }
        Err(cause) => Err(match store.write(move |c| undo(c)).await {
            Ok(()) => cause,
            Err(e) => Error::rollback(cause, e),
        }),
    }
}
