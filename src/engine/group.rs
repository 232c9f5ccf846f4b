//! Group snapshots: `snapshot.create_group` takes one snapshot of each of several shares
//! of one pool at one instant, all or nothing; `group_snapshot.list`, `.show` and
//! `.delete` read and remove them together.
//!
//! Creation: every share is locked (in id order, so two groups never wait on each other),
//! the group row and every member row are committed `creating` with one intent, every
//! mounted filesystem share is frozen, all members are reflinked, all are thawed, and one
//! commit makes the group and its members `available` and forgets the intent. A failure
//! removes every member; a crash is undone at start-up (recovery removes `creating`
//! snapshots, then the group row). Block shares are not paused: each member is the image
//! of its volume at its own reflink, which holds every write acknowledged before the
//! request (docs/protocol.md §8.33 says what that means across members).

use std::path::PathBuf;
use std::sync::Arc;

use super::share::ensure_available;
use super::{answer, blocking, failpoint, Engine};
use crate::error::{Error, Result};
use crate::model::{
    self, check_group_members, Demand, Layout, Outcome, Share, ShareState, Snapshot, SnapshotGroup,
    MAX_GROUP_SHARES,
};
use crate::pool::Pool;
use crate::proto::{Answer, GroupSnapshotRef, PoolFilter, SnapshotCreateGroupArgs};
use crate::store::{self, now};

/// The intent of a group's creation (its object: the group id).
pub(super) const GROUP_CREATE_INTENT: &str = "snapshot.create_group";
/// The intent of a group's deletion.
pub(super) const GROUP_DELETE_INTENT: &str = "group_snapshot.delete";

impl Engine {
    /// `snapshot.create_group`: `{group, changed}`; the same name with the same shares
    /// again is answered with the group that exists (`changed: false`).
    pub(super) async fn create_group(&self, a: SnapshotCreateGroupArgs) -> Result<Answer> {
        model::validate_name("snapshot", &a.name)?;
        if a.shares.len() > MAX_GROUP_SHARES {
            check_group_members(&a.shares).map_err(Error::Invalid)?;
        }
        let mut ids = Vec::with_capacity(a.shares.len());
        for r in &a.shares {
            ids.push(self.share_id(r, a.pool.as_deref()).await?);
        }
        check_group_members(&ids).map_err(Error::Invalid)?;
        let mut order = ids.clone();
        order.sort();
        let mut guards = Vec::with_capacity(order.len());
        for id in &order {
            guards.push(self.locks.lock(id).await);
        }
        let mut shares = Vec::with_capacity(ids.len());
        for id in &ids {
            let s = self.share_by_id(id).await?;
            ensure_available(&s)?;
            shares.push(s);
        }
        let pool_name = shares[0].pool.clone();
        if let Some(other) = shares.iter().find(|s| s.pool != pool_name) {
            return Err(Error::Invalid(format!(
                "the shares of a group snapshot must be in one pool: {} is in {}, {} in {}",
                shares[0].name, pool_name, other.name, other.pool
            )));
        }
        let pool = self.pool(&pool_name)?;
        if !pool.reflink() {
            return Err(Error::Unsupported(format!(
                "pool {pool_name} copies snapshots (no reflink): a group of copies is not \
                 taken at one instant"
            )));
        }
        let group = new_group(&a.name, &pool_name, &shares);
        let (row, room) = (group.clone(), self.room(&pool).await?);
        let made = self
            .store
            .write(
                move |c| -> Result<std::result::Result<i64, SnapshotGroup>> {
                    if let Ok(found) = store::find_group(c, &row.name, Some(&row.pool)) {
                        return Ok(Err(found));
                    }
                    for m in &row.snapshots {
                        let what = format!("snapshot {}@{}", m.share_name, m.name);
                        room.check(c, &what, Demand::Snapshot)?;
                    }
                    store::insert_group(c, &row)?;
                    for m in &row.snapshots {
                        store::insert_snapshot(c, m)?;
                    }
                    let data = serde_json::json!({
                        "snapshots": row.snapshots.iter().map(|s| &s.id).collect::<Vec<_>>()
                    });
                    store::insert_intent(c, GROUP_CREATE_INTENT, &row.id, &data).map(Ok)
                },
            )
            .await?;
        let intent = match made {
            Ok(intent) => intent,
            Err(existing) => return same_group(existing, &ids),
        };
        failpoint::hit("snapshot.create_group.after_intent");
        let t0 = std::time::Instant::now();
        let copied = self.snapshot_members(&pool, &shares, &group).await;
        let took = t0.elapsed();
        if let Err(cause) = copied {
            return Err(self.undo_group(&pool, &group, intent, cause).await);
        }
        failpoint::hit("snapshot.create_group.after_copy");
        let gid = group.id.clone();
        self.store
            .write(move |c| {
                store::set_group_state(c, &gid, ShareState::Available)?;
                store::delete_intent(c, intent)
            })
            .await?;
        drop(guards);
        let mut group = group;
        group.state = ShareState::Available;
        for m in &mut group.snapshots {
            m.state = ShareState::Available;
        }
        log::info!(
            "group snapshot created: {} ({}) of {} share(s) in pool {} in {:.3} ms",
            group.name,
            group.id,
            group.snapshots.len(),
            group.pool,
            took.as_secs_f64() * 1000.0
        );
        answer(Answer::object(&Outcome::Created(group)))
    }

    /// Freeze every mounted filesystem share of the group, reflink every member, thaw.
    async fn snapshot_members(
        &self,
        pool: &Arc<dyn Pool>,
        shares: &[Share],
        group: &SnapshotGroup,
    ) -> Result<()> {
        let mut frozen: Vec<PathBuf> = Vec::new();
        let mut result = Ok(());
        for s in shares {
            if s.layout != Layout::Filesystem || self.formatter.mounted(&s.id).await.is_none() {
                continue;
            }
            let mp = self.formatter.mountpoint(&s.id);
            if let Err(e) = self.formatter.freeze(&mp).await {
                result = Err(e);
                break;
            }
            frozen.push(mp);
        }
        if result.is_ok() {
            let (p, sh, members) = (pool.clone(), shares.to_vec(), group.snapshots.clone());
            result = blocking(move || {
                sh.iter()
                    .zip(&members)
                    .try_for_each(|(s, m)| p.snapshot(s, m))
            })
            .await;
        }
        for mp in frozen.iter().rev() {
            self.formatter.thaw(mp).await;
        }
        result
    }

    /// Remove every member a failed creation made, then the rows and the intent.
    async fn undo_group(
        &self,
        pool: &Arc<dyn Pool>,
        group: &SnapshotGroup,
        intent: i64,
        cause: Error,
    ) -> Error {
        let (p, ids) = (pool.clone(), member_ids(group));
        let removed = blocking(move || ids.iter().try_for_each(|id| p.remove_snapshot(id))).await;
        let gid = group.id.clone();
        let cleared = self
            .store
            .write(move |c| {
                store::delete_group_rows(c, &gid)?;
                store::delete_intent(c, intent)
            })
            .await;
        match removed.and(cleared) {
            Ok(()) => cause,
            Err(e) => Error::rollback(cause, e),
        }
    }

    /// `group_snapshot.list`.
    pub(super) async fn list_groups(&self, a: PoolFilter) -> Result<Vec<SnapshotGroup>> {
        self.store
            .call(move |c| store::list_groups(c, a.pool.as_deref()))
            .await
    }

    /// `group_snapshot.show`.
    pub(super) async fn show_group(&self, a: GroupSnapshotRef) -> Result<SnapshotGroup> {
        self.store
            .call(move |c| store::find_group(c, &a.group, a.pool.as_deref()))
            .await
    }

    /// `group_snapshot.delete`: every member snapshot, then the group (clones made from
    /// members are independent and stay).
    pub(super) async fn delete_group(&self, a: GroupSnapshotRef) -> Result<Outcome<String>> {
        let found = self.show_group(a).await?;
        let mut order: Vec<String> = found.snapshots.iter().map(|s| s.share.clone()).collect();
        order.sort();
        order.dedup();
        let mut guards = Vec::with_capacity(order.len());
        for id in &order {
            guards.push(self.locks.lock(id).await);
        }
        let gid = found.id.clone();
        let group = self
            .store
            .call(move |c| store::get_group(c, &gid))
            .await?
            .ok_or_else(|| Error::NotFound(format!("group {} was deleted meanwhile", found.id)))?;
        if group.state == ShareState::Creating {
            return Err(Error::Busy(format!(
                "group snapshot {} is still being created",
                group.name
            )));
        }
        let pool = self.pool(&group.pool)?;
        let gid = group.id.clone();
        let intent = self
            .store
            .write(move |c| {
                store::set_group_state(c, &gid, ShareState::Deleting)?;
                store::insert_intent(c, GROUP_DELETE_INTENT, &gid, &serde_json::json!({}))
            })
            .await?;
        failpoint::hit("group_snapshot.delete.after_mark");
        let (p, ids) = (pool.clone(), member_ids(&group));
        blocking(move || ids.iter().try_for_each(|id| p.remove_snapshot(id))).await?;
        failpoint::hit("group_snapshot.delete.after_files");
        let gid = group.id.clone();
        self.store
            .write(move |c| {
                store::delete_group_rows(c, &gid)?;
                store::delete_intent(c, intent)
            })
            .await?;
        log::info!(
            "group snapshot deleted: {} ({}) with {} snapshot(s)",
            group.name,
            group.id,
            group.snapshots.len()
        );
        Ok(Outcome::Deleted(group.id))
    }

    /// Start-up recovery of a group's creation or deletion: what is left of its members
    /// goes (the `creating`/`deleting` member rows were already removed with their files),
    /// then the group row.
    pub(super) async fn replay_group(&self, intent: &store::Intent) -> Result<String> {
        let gid = intent.object.clone();
        let group = self.store.call(move |c| store::get_group(c, &gid)).await?;
        let left = group.as_ref().map_or(0, |g| g.snapshots.len());
        if let Some(g) = &group {
            let Ok(pool) = self.pool(&g.pool) else {
                return Ok(format!(
                    "group snapshot {} ({}) is in pool {}, which is not configured: left as is",
                    g.name, g.id, g.pool
                ));
            };
            let (p, ids) = (pool.clone(), member_ids(g));
            blocking(move || ids.iter().try_for_each(|id| p.remove_snapshot(id))).await?;
            let gid = g.id.clone();
            self.store
                .write(move |c| store::delete_group_rows(c, &gid))
                .await?;
        }
        let name = group.map_or_else(|| intent.object.clone(), |g| g.name);
        Ok(if intent.op == GROUP_CREATE_INTENT {
            format!("group snapshot {name} was being created at the crash: undone")
        } else {
            format!(
                "group snapshot {name} was being deleted at the crash: finished ({left} \
                 member(s) left to remove)"
            )
        })
    }
}

/// The group to create: one `creating` member per share, all with the group's time.
fn new_group(name: &str, pool: &str, shares: &[Share]) -> SnapshotGroup {
    let (id, created_at) = (uuid::Uuid::new_v4().to_string(), now());
    let snapshots = shares
        .iter()
        .map(|s| Snapshot {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            share: s.id.clone(),
            share_name: s.name.clone(),
            pool: pool.to_string(),
            size: s.size,
            state: ShareState::Creating,
            created_at,
            group: Some(id.clone()),
        })
        .collect();
    SnapshotGroup {
        id,
        name: name.to_string(),
        pool: pool.to_string(),
        state: ShareState::Creating,
        created_at,
        snapshots,
    }
}

/// A retry of a creation: the group that exists when it has exactly these shares.
fn same_group(existing: SnapshotGroup, ids: &[String]) -> Result<Answer> {
    let mut have: Vec<&str> = existing
        .snapshots
        .iter()
        .map(|s| s.share.as_str())
        .collect();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    have.sort_unstable();
    want.sort_unstable();
    match existing.state {
        ShareState::Available if have == want => {
            answer(Answer::object(&Outcome::AlreadyThere(existing)))
        }
        ShareState::Available => Err(Error::AlreadyExists(format!(
            "group snapshot {} already exists in pool {} with other shares",
            existing.name, existing.pool
        ))),
        other => Err(Error::Busy(format!(
            "group snapshot {} is {}",
            existing.name,
            other.as_str()
        ))),
    }
}

fn member_ids(g: &SnapshotGroup) -> Vec<String> {
    g.snapshots.iter().map(|s| s.id.clone()).collect()
}
