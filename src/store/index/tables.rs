//! The index's maps, changed in place one row at a time.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::model::{Share, Snapshot};

/// Where a snapshot sorts: `snapshot.list`'s `ORDER BY created_at, rowid`.
type SnapKey = (i64, i64);

/// An entry found by its id. Its key is the row's own `id` (no copy of it): 10,000
/// shares and as many snapshots fit in a few MiB (docs/performance.md).
#[derive(Debug)]
struct ById<T>(Arc<T>);

/// A row with an id.
trait HasId {
    fn id(&self) -> &str;
}

impl HasId for Share {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for Snapshot {
    fn id(&self) -> &str {
        &self.id
    }
}

impl<T: HasId> Borrow<str> for ById<T> {
    fn borrow(&self) -> &str {
        self.0.id()
    }
}

impl<T: HasId> PartialEq for ById<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}

impl<T: HasId> Eq for ById<T> {}

impl<T: HasId> Hash for ById<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that a lookup by `&str` finds it.
        self.0.id().hash(state)
    }
}

/// A share in its pool's set, ordered and found by name (bytewise, as SQLite's BINARY
/// collation orders `ORDER BY name`).
#[derive(Debug)]
struct ByName(Arc<Share>);

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl PartialOrd for ByName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.name.as_bytes().cmp(other.0.name.as_bytes())
    }
}

/// The rows of `shares` and `snapshots`, with the lookups the reads make.
#[derive(Debug, Default)]
pub(super) struct Tables {
    /// Shares by id.
    shares: HashSet<ById<Share>>,
    /// Shares by rowid (the update hook names rows by rowid).
    share_rows: HashMap<i64, Arc<Share>>,
    /// Shares by pool, then name: `share.list`'s order (`ORDER BY pool, name`).
    by_pool: BTreeMap<String, BTreeSet<ByName>>,
    /// Snapshots in `snapshot.list`'s order.
    snapshots: BTreeMap<SnapKey, Arc<Snapshot>>,
    /// Snapshots by rowid.
    snapshot_rows: HashMap<i64, Arc<Snapshot>>,
    /// Snapshots by id.
    snapshot_ids: HashSet<ById<Snapshot>>,
    /// Each share's snapshots, in order (a share has few; a sorted vector is the
    /// smallest).
    of_share: HashMap<String, Vec<SnapKey>>,
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
            let Some(old) = self.share_rows.get(rowid) else {
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
            .replace(ByName(s.clone()));
        self.share_rows.insert(rowid, s.clone());
        self.shares.replace(ById(s));
    }

    fn remove_share(&mut self, rowid: i64) {
        let Some(s) = self.share_rows.remove(&rowid) else {
            return;
        };
        self.shares.remove(s.id.as_str());
        if let Some(names) = self.by_pool.get_mut(&s.pool) {
            names.remove(s.name.as_str());
            if names.is_empty() {
                self.by_pool.remove(&s.pool);
            }
        }
    }

    fn insert_snapshot(&mut self, rowid: i64, s: Snapshot) {
        let key = (s.created_at, rowid);
        let of = self.of_share.entry(s.share.clone()).or_default();
        if let Err(at) = of.binary_search(&key) {
            of.insert(at, key);
        }
        let s = Arc::new(s);
        self.snapshot_rows.insert(rowid, s.clone());
        self.snapshots.insert(key, s.clone());
        self.snapshot_ids.replace(ById(s));
    }

    fn remove_snapshot(&mut self, rowid: i64) {
        let Some(s) = self.snapshot_rows.remove(&rowid) else {
            return;
        };
        let key = (s.created_at, rowid);
        self.snapshots.remove(&key);
        self.snapshot_ids.remove(s.id.as_str());
        if let Some(keys) = self.of_share.get_mut(&s.share) {
            if let Ok(at) = keys.binary_search(&key) {
                keys.remove(at);
            }
            if keys.is_empty() {
                self.of_share.remove(&s.share);
            }
        }
    }

    /// A share by id.
    pub(super) fn share(&self, id: &str) -> Option<Arc<Share>> {
        self.shares.get(id).map(|e| e.0.clone())
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
        let pools: Vec<&BTreeSet<ByName>> = match pool {
            Some(p) => self.by_pool.get(p).into_iter().collect(),
            None => self.by_pool.values().collect(),
        };
        match name {
            Some(n) => pools
                .iter()
                .filter_map(|m| m.get(n))
                .map(|e| e.0.clone())
                .collect(),
            None => pools
                .iter()
                .flat_map(|m| m.iter().map(|e| e.0.clone()))
                .collect(),
        }
    }

    /// A snapshot by id.
    pub(super) fn snapshot(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.snapshot_ids.get(id).map(|e| e.0.clone())
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
        (self.share_rows.len(), self.snapshot_rows.len())
    }
}
