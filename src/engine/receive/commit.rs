//! `snapshot.receive.finish`: commit a received snapshot, journaled.
//!
//! A first receive makes the share: its row and the snapshot's are inserted `creating`
//! in one transaction, the staging file becomes the snapshot, the share's volume is made
//! as a reflink of it, and both rows turn `available` in one transaction (a crash before
//! that is undone at start-up like any `creating` row). A later receive inserts the
//! snapshot `creating`, moves the staging file into place, then in one transaction marks
//! it `available` and journals the intent [`RECEIVE_INTENT`]; the share's volume is then
//! overwritten with a reflink of the snapshot and the share's size recorded, removing the
//! intent in the same transaction. A leftover intent is rolled forward at start-up.

use serde::Serialize;

use super::super::{answer, blocking, Engine};
use crate::error::{Error, Result};
use crate::model::{escape_for_display, Layout, Share, ShareState, Snapshot};
use crate::proto::{Answer, ReceiveRef};
use crate::store::{self, now};

/// The journal's name for "make share `object`'s content snapshot `data.snapshot`'s".
pub const RECEIVE_INTENT: &str = "snapshot.receive";

/// `snapshot.receive.finish`'s answer.
#[derive(Debug, Serialize)]
struct Received {
    share: Share,
    snapshot: Snapshot,
    changed: bool,
    /// The sender's node id from the stream's header (`null` for a sender that did not
    /// write one). Reported, not stored.
    origin_node: Option<crate::model::NodeId>,
}

impl Engine {
    /// `snapshot.receive.finish`: the stream is whole and its checksum matched; commit.
    pub(in crate::engine) async fn finish_receive(&self, a: ReceiveRef) -> Result<Answer> {
        let entry = self.receive_entry(&a.receive)?;
        let (pool, name, head) = {
            let mut r = entry.lock().expect("receive");
            r.decoder
                .finish()
                .map_err(|e| Error::Invalid(format!("send stream refused: {e}")))?;
            // The staging file is whole: closed before the commit (the pool syncs what it
            // adopts; an LVM pool cannot deactivate an LV held open).
            r.staging = None;
            let head = r
                .head
                .clone()
                .ok_or_else(|| Error::Internal("a whole stream without a head".into()))?;
            (r.pool.clone(), r.name.clone(), head)
        };
        let origin_node = head.header.node_id.clone();
        let done = self.commit_receive(&a.receive, &pool, &name, head).await;
        // Whatever happened, the receive is over (its staging file moved or to be removed).
        self.drop_receive(&a.receive).await;
        let (share, snapshot, changed) = done?;
        answer(Answer::read(&Received {
            share,
            snapshot,
            changed,
            origin_node,
        }))
    }

    async fn commit_receive(
        &self,
        receive_id: &str,
        pool_name: &str,
        name: &str,
        head: super::Head,
    ) -> Result<(Share, Snapshot, bool)> {
        let _name_guard = self
            .locks
            .lock(&format!("receive:{pool_name}/{name}"))
            .await;
        let pool = self.pool(pool_name)?;
        let (pn, n) = (pool_name.to_string(), name.to_string());
        let existing = self
            .store
            .call(move |c| store::get_share_by_name(c, &pn, &n))
            .await?;
        if let Some(s) = head.already {
            let share = existing.ok_or_else(|| Error::NotFound(format!("share {name} is gone")))?;
            // An earlier finish committed the snapshot but could not make it the share's
            // content (its intent is still journaled): finish that now, rather than answer
            // that nothing needed doing.
            let _g = self.locks.lock(&share.id).await;
            let (shid, sid) = (share.id.clone(), s.id.clone());
            let pending = self
                .store
                .call(move |c| {
                    Ok(store::list_intents(c)?.into_iter().find(|i| {
                        i.op == RECEIVE_INTENT
                            && i.object == shid
                            && i.data["snapshot"].as_str() == Some(sid.as_str())
                    }))
                })
                .await?;
            if let Some(intent) = pending {
                let share = self.share_by_id(&share.id).await?;
                let share = self.apply_received(&share, &s, Some(intent.id)).await?;
                return Ok((share, s, true));
            }
            return Ok((share, s, false));
        }
        let h = head.header;
        let snap = |share: &Share| Snapshot {
            id: h.snapshot_id.clone(),
            name: h.snapshot_name.clone(),
            share: share.id.clone(),
            share_name: share.name.clone(),
            pool: share.pool.clone(),
            size: h.size,
            state: ShareState::Creating,
            created_at: h.created_at,
            group: None,
        };
        log::info!(
            "receive {receive_id}: snapshot {} ({}) of share {} ({}) from node {} ({}), {} \
             bytes{}",
            h.snapshot_name,
            h.snapshot_id,
            h.share_name,
            h.share_id,
            h.node
                .as_deref()
                .map(escape_for_display)
                .unwrap_or("?".into()),
            h.node_id
                .as_ref()
                .map(|n| n.as_str())
                .unwrap_or("no node id"),
            h.size,
            h.base
                .as_deref()
                .map(|b| format!(", incremental from {b}"))
                .unwrap_or_default()
        );
        let Some(share) = existing else {
            return self
                .receive_new_share(receive_id, &pool, name, &snap, h.size)
                .await;
        };
        let _g = self.locks.lock(&share.id).await;
        let share = self.share_by_id(&share.id).await?;
        self.ensure_receivable(&share).await?;
        let s = snap(&share);
        let row = s.clone();
        self.store
            .write(move |c| store::insert_snapshot(c, &row))
            .await?;
        let (p, rid, sn) = (pool.clone(), receive_id.to_string(), s.clone());
        if let Err(cause) = blocking(move || p.adopt_staging(&rid, &sn)).await {
            let id = s.id.clone();
            return Err(
                match self
                    .store
                    .write(move |c| store::delete_snapshot_row(c, &id))
                    .await
                {
                    Ok(()) => cause,
                    Err(e) => Error::rollback(cause, e),
                },
            );
        }
        let (sid, shid, size) = (s.id.clone(), share.id.clone(), s.size);
        let intent = self
            .store
            .write(move |c| {
                store::set_snapshot_state(c, &sid, ShareState::Available)?;
                let data = serde_json::json!({ "snapshot": sid, "size": size });
                store::insert_intent(c, RECEIVE_INTENT, &shid, &data)
            })
            .await?;
        super::super::failpoint::hit("snapshot.receive.after_snapshot");
        let share = self.apply_received(&share, &s, Some(intent)).await?;
        let mut s = s;
        s.state = ShareState::Available;
        Ok((share, s, true))
    }

    /// Make `share`'s content snapshot `snap`'s and record its size; removes `intent`.
    async fn apply_received(
        &self,
        share: &Share,
        snap: &Snapshot,
        intent: Option<i64>,
    ) -> Result<Share> {
        let pool = self.pool(&share.pool)?;
        let mut target = share.clone();
        target.size = snap.size;
        let (p, sn, sh) = (pool.clone(), snap.clone(), target.clone());
        blocking(move || p.volume_from_snapshot(&sn, &sh)).await?;
        let (id, size) = (share.id.clone(), snap.size);
        self.store
            .write(move |c| {
                store::set_share_size(c, &id, size)?;
                if let Some(i) = intent {
                    store::delete_intent(c, i)?;
                }
                Ok(())
            })
            .await?;
        Ok(target)
    }

    /// The first receive: the share and the snapshot together.
    async fn receive_new_share(
        &self,
        receive_id: &str,
        pool: &std::sync::Arc<dyn crate::pool::Pool>,
        name: &str,
        snap: &(dyn Fn(&Share) -> Snapshot + Sync),
        size: u64,
    ) -> Result<(Share, Snapshot, bool)> {
        let share = Share {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            pool: pool.name().to_string(),
            size,
            sparse: true,
            multiattach: false,
            state: ShareState::Creating,
            created_at: now(),
            origin_snapshot: None,
            origin_share: None,
            metadata: Default::default(),
            layout: Layout::Block,
            filesystem: None,
        };
        let s = snap(&share);
        let (r1, r2) = (share.clone(), s.clone());
        self.store
            .write(move |c| {
                store::insert_share(c, &r1)?;
                store::insert_snapshot(c, &r2)
            })
            .await?;
        let (p, rid, sn, sh) = (
            pool.clone(),
            receive_id.to_string(),
            s.clone(),
            share.clone(),
        );
        let made = blocking(move || {
            p.adopt_staging(&rid, &sn)?;
            super::super::failpoint::hit("snapshot.receive.after_adopt");
            p.clone_volume(&sn, &sh)
        })
        .await;
        if let Err(cause) = made {
            let (p, sid, shid) = (pool.clone(), s.id.clone(), share.id.clone());
            let undone = blocking(move || {
                p.remove_snapshot(&sid)?;
                p.remove_volume(&shid)
            })
            .await;
            let (sid, shid) = (s.id.clone(), share.id.clone());
            let rows = self
                .store
                .write(move |c| {
                    store::delete_snapshot_row(c, &sid)?;
                    store::delete_share_row(c, &shid)
                })
                .await;
            return Err(match undone.and(rows) {
                Ok(()) => cause,
                Err(e) => Error::rollback(cause, e),
            });
        }
        let (sid, shid) = (s.id.clone(), share.id.clone());
        self.store
            .write(move |c| {
                store::set_snapshot_state(c, &sid, ShareState::Available)?;
                store::set_share_state(c, &shid, ShareState::Available)
            })
            .await?;
        let (mut share, mut s) = (share, s);
        share.state = ShareState::Available;
        s.state = ShareState::Available;
        Ok((share, s, true))
    }

    /// Start-up: finish a receive whose snapshot was committed but whose share's content
    /// had not been replaced yet.
    pub(in crate::engine) async fn replay_receive(&self, intent: &store::Intent) -> Result<String> {
        let sid = intent.data["snapshot"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (shid, s2) = (intent.object.clone(), sid.clone());
        let (share, snap) = self
            .store
            .call(move |c| Ok((store::get_share(c, &shid)?, store::get_snapshot(c, &s2)?)))
            .await?;
        let (Some(share), Some(snap)) = (share, snap) else {
            return Ok(format!(
                "receive into vanished share {} dropped",
                intent.object
            ));
        };
        self.apply_received(&share, &snap, None).await?;
        Ok(format!(
            "receive of snapshot {} into share {} was interrupted: finished",
            snap.name, share.name
        ))
    }
}
