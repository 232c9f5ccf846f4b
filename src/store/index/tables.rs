//! The index's maps, changed in place one row at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::model::{Share, Snapshot};

/// Where a snapshot sorts: `snapshot.list`'s `ORDER BY created_at, rowid`.
type SnapKey = (i64, i64);

/// The rows of `shares` and `snapshots`, with the lookups the reads make.
#[derive(Debug, Default)]
pub(super) struct Tables {
    /// Shares by id.
    shares: HashMap<String, Arc<Share>>,
    /// Share ids by rowid (the update hook names rows by rowid).
    share_ids: HashMap<i64, String>,
    /// Shares by pool, then name: `share.list`'s order (`ORDER BY pool, name`, both
    /// compared bytewise as SQLite's BINARY collation does).
    by_pool: BTreeMap<String, BTreeMap<String, Arc<Share>>>,
    /// Snapshots in `snapshot.list`'s order.
    snapshots: BTreeMap<SnapKey, Arc<Snapshot>>,
    /// Each snapshot's `created_at` by rowid (which with the rowid is its key).
    snapshot_created: HashMap<i64, i64>,
    /// Snapshot keys by id.
    snapshot_ids: HashMap<String, SnapKey>,
    /// Each share's snapshots, in order.
    of_share: HashMap<String, BTreeSet<SnapKey>>,
}

impl Tables {
    /// Tables holding these rows.
    pub(super) fn from_rows(shares: Vec<(i64, Share)>, snapshots: Vec<(i64, Snapshot)>) -> Self {
        let mut t = Tables::default();
        for (rowid, s) in shares {
            t.insert_share(rowid, s);
        }
        for (rowid, s) in snapshots {
            t.insert_snapshot(rowid, s);
        }
        t
    }

    /// Make the entries of `rowids` those of `rows` (the rows of `rowids` still in the
    /// table): every entry of `rowids` goes, then each row present comes back.
    pub(super) fn apply_shares(&mut self, rowids: &[i64], rows: Vec<(i64, Share)>) {
        for rowid in rowids {
            self.remove_share(*rowid);
        }
        for (rowid, s) in rows {
            self.insert_share(rowid, s);
        }
    }

    /// As [`Tables::apply_shares`], for snapshots.
    pub(super) fn apply_snapshots(&mut self, rowids: &[i64], rows: Vec<(i64, Snapshot)>) {
        for rowid in rowids {
            self.remove_snapshot(*rowid);
        }
        for (rowid, s) in rows {
            self.insert_snapshot(rowid, s);
        }
    }

    /// The rowids of the snapshots whose rows these new share rows change: those of a
    /// share whose name or pool is not what the index shows.
    pub(super) fn snapshots_shown_stale(&self, rows: &[(i64, Share)]) -> Vec<i64> {
        let mut out = Vec::new();
        for (rowid, new) in rows {
            let Some(old) = self.share_ids.get(rowid).and_then(|id| self.shares.get(id)) else {
                continue;
            };
            if old.id != new.id || old.name != new.name || old.pool != new.pool {
                if let Some(keys) = self.of_share.get(&old.id) {
                    out.extend(keys.iter().map(|(_, r)| *r));
                }
            }
        }
        out
    }

    fn insert_share(&mut self, rowid: i64, s: Share) {
        let s = Arc::new(s);
        self.by_pool
            .entry(s.pool.clone())
            .or_default()
            .insert(s.name.clone(), s.clone());
        self.share_ids.insert(rowid, s.id.clone());
        self.shares.insert(s.id.clone(), s);
    }

    fn remove_share(&mut self, rowid: i64) {
        let Some(id) = self.share_ids.remove(&rowid) else {
            return;
        };
        let Some(s) = self.shares.remove(&id) else {
            return;
        };
        if let Some(names) = self.by_pool.get_mut(&s.pool) {
            names.remove(&s.name);
            if names.is_empty() {
                self.by_pool.remove(&s.pool);
            }
        }
    }

    fn insert_snapshot(&mut self, rowid: i64, s: Snapshot) {
        let key = (s.created_at, rowid);
        self.snapshot_created.insert(rowid, s.created_at);
        self.snapshot_ids.insert(s.id.clone(), key);
        self.of_share
            .entry(s.share.clone())
            .or_default()
            .insert(key);
        self.snapshots.insert(key, Arc::new(s));
    }

    fn remove_snapshot(&mut self, rowid: i64) {
        let Some(created) = self.snapshot_created.remove(&rowid) else {
            return;
        };
        let key = (created, rowid);
        let Some(s) = self.snapshots.remove(&key) else {
            return;
        };
        self.snapshot_ids.remove(&s.id);
        if let Some(keys) = self.of_share.get_mut(&s.share) {
            keys.remove(&key);
            if keys.is_empty() {
                self.of_share.remove(&s.share);
            }
        }
    }

    /// A share by id.
    pub(super) fn share(&self, id: &str) -> Option<Arc<Share>> {
        self.shares.get(id).cloned()
    }

    /// Shares matching every filter given, ordered by pool and name.
    pub(super) fn shares(
        &self,
        pool: Option<&str>,
        name: Option<&str>,
        id: Option<&str>,
    ) -> Vec<Arc<Share>> {
        let keep = |s: &Share| pool.is_none_or(|p| p == s.pool) && name.is_none_or(|n| n == s.name);
        if let Some(id) = id {
            return self.share(id).filter(|s| keep(s)).into_iter().collect();
        }
        let pools: Vec<&BTreeMap<String, Arc<Share>>> = match pool {
            Some(p) => self.by_pool.get(p).into_iter().collect(),
            None => self.by_pool.values().collect(),
        };
        match name {
            Some(n) => pools.iter().filter_map(|m| m.get(n).cloned()).collect(),
            None => pools.iter().flat_map(|m| m.values().cloned()).collect(),
        }
    }

    /// A snapshot by id.
    pub(super) fn snapshot(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.snapshot_ids
            .get(id)
            .and_then(|k| self.snapshots.get(k))
            .cloned()
    }

    /// Snapshots of a share and/or a pool, in `snapshot.list`'s order.
    pub(super) fn snapshots(
        &self,
        share_id: Option<&str>,
        pool: Option<&str>,
    ) -> Vec<Arc<Snapshot>> {
        let keep = |s: &&Arc<Snapshot>| pool.is_none_or(|p| p == s.pool);
        match share_id {
            Some(id) => self
                .of_share
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|k| self.snapshots.get(k))
                .filter(keep)
                .cloned()
                .collect(),
            None => self.snapshots.values().filter(keep).cloned().collect(),
        }
    }

    /// The snapshot of share `share_id` named `reference` (or, failing that, with that id).
    pub(super) fn snapshot_of(&self, share_id: &str, reference: &str) -> Option<Arc<Snapshot>> {
        let of = || {
            self.of_share
                .get(share_id)
                .into_iter()
                .flatten()
                .filter_map(|k| self.snapshots.get(k))
        };
        of().find(|s| s.name == reference)
            .or_else(|| of().find(|s| s.id == reference))
            .cloned()
    }

    /// Numbers of shares and snapshots.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.shares.len(), self.snapshots.len())
    }
}
