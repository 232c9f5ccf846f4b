//! The in-memory index of the `shares` and `snapshots` tables, which the reads
//! (`share.show`, `share.list`, `snapshot.list`, `snapshot.show`, `tree`) are answered from
//! on the event loop, without a trip to the database thread.
//!
//! It is kept in sync by the store itself, for every write, whoever makes it:
//! - SQLite's update hook (on the store's one connection) records the rowid of every row
//!   of `shares` and `snapshots` that a statement inserts, updates or deletes;
//! - after each job of [`super::Store::call`] (so after every [`super::Store::write`]),
//!   before its caller is answered, [`Index::sync`] re-reads exactly those rows with the
//!   same row-mapping functions the queries use (`share_from_row`, `snapshot_from_row`) and
//!   applies them in place: a row that is there replaces its entry, one that is gone
//!   removes it. The cost is O(rows changed), whatever the tables' size. A rolled-back
//!   change re-reads the rows as they are, that is as they were: the index is unchanged.
//! - `PRAGMA data_version` tells when another connection (an operator's `sqlite3`)
//!   committed: then the whole index is reloaded.
//!
//! So a read that follows an acknowledged write sees it: the write's job synced the index
//! before the write's caller got its result. Readers hold the lock only to copy out
//! `Arc`s; the one writer (the database thread) holds it for the few entries it changes.

mod tables;

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use rusqlite::hooks::Action;
use rusqlite::Connection;

use super::shares::shares_by_rowid;
use super::snapshots::snapshots_by_rowid;
use crate::error::{Error, Result};
use crate::model::{Share, Snapshot};
use tables::Tables;

/// Rowids changed since the last sync, as the update hook reported them.
#[derive(Debug, Default)]
struct Changed {
    shares: Vec<i64>,
    snapshots: Vec<i64>,
}

/// The index: the tables' rows in memory, and what changed since they were synced.
#[derive(Debug, Default)]
pub struct Index {
    tables: RwLock<Tables>,
    changed: Arc<Mutex<Changed>>,
    /// `PRAGMA data_version` when the index was last brought up to date.
    data_version: Mutex<i64>,
    /// Rows re-read by syncs since start (a full load counts every row): how the tests see
    /// that a write costs the rows it changed, not the table.
    reread: std::sync::atomic::AtomicU64,
}

impl Index {
    /// Install the update hook on the store's connection and load every row.
    pub(super) fn install(&self, conn: &mut Connection) -> Result<()> {
        let changed = self.changed.clone();
        conn.update_hook(Some(
            move |_: Action, _db: &str, table: &str, rowid: i64| {
                let is_share = match table {
                    "shares" => true,
                    "snapshots" => false,
                    _ => return,
                };
                let mut c = changed.lock().expect("index changes");
                if is_share {
                    c.shares.push(rowid);
                } else {
                    c.snapshots.push(rowid);
                }
            },
        ))?;
        self.load(conn)
    }

    /// Replace the whole index with the tables as they are.
    fn load(&self, conn: &Connection) -> Result<()> {
        let version = data_version(conn)?;
        let shares = shares_by_rowid(conn, None)?;
        let snapshots = snapshots_by_rowid(conn, None)?;
        self.count_reread(shares.len() + snapshots.len());
        let fresh = Tables::from_rows(shares, snapshots);
        *self.changed.lock().expect("index changes") = Changed::default();
        *self.tables.write().expect("index") = fresh;
        *self.data_version.lock().expect("index version") = version;
        Ok(())
    }

    /// Bring the index up to date after a job: re-read the rows the job changed (nothing
    /// to do when it changed none), or everything if another connection committed. Runs
    /// on the database thread, outside any transaction; a failure is logged and the rows
    /// are kept to be re-read by the next sync.
    pub(super) fn sync(&self, conn: &Connection) {
        if !conn.is_autocommit() {
            return;
        }
        if let Err(e) = self.try_sync(conn) {
            log::error!("updating the in-memory index: {e}; reloading it");
            if let Err(e) = self.load(conn) {
                log::error!("reloading the in-memory index: {e}");
            }
        }
    }

    fn try_sync(&self, conn: &Connection) -> Result<()> {
        let version = data_version(conn)?;
        if version != *self.data_version.lock().expect("index version") {
            log::info!("the database was changed by another connection: reloading the index");
            return self.load(conn);
        }
        let Changed {
            mut shares,
            mut snapshots,
        } = std::mem::take(&mut *self.changed.lock().expect("index changes"));
        if shares.is_empty() && snapshots.is_empty() {
            return Ok(());
        }
        let restore = |shares: &[i64], snapshots: &[i64]| {
            let mut c = self.changed.lock().expect("index changes");
            c.shares.extend_from_slice(shares);
            c.snapshots.extend_from_slice(snapshots);
        };
        sort_unique(&mut shares);
        let share_rows = match shares_by_rowid(conn, Some(&shares)) {
            Ok(rows) => rows,
            Err(e) => {
                restore(&shares, &snapshots);
                return Err(e);
            }
        };
        // A share whose name or pool changed changes its snapshots' rows too (they show
        // both): re-read those as well.
        snapshots.extend(self.read().snapshots_shown_stale(&share_rows));
        sort_unique(&mut snapshots);
        let snapshot_rows = match snapshots_by_rowid(conn, Some(&snapshots)) {
            Ok(rows) => rows,
            Err(e) => {
                restore(&shares, &snapshots);
                return Err(e);
            }
        };
        self.count_reread(share_rows.len() + snapshot_rows.len());
        let mut t = self.tables.write().expect("index");
        t.apply_shares(&shares, share_rows);
        t.apply_snapshots(&snapshots, snapshot_rows);
        Ok(())
    }

    fn count_reread(&self, rows: usize) {
        self.reread
            .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Rows read from the database into the index since it was made.
    pub fn rows_reread(&self) -> u64 {
        self.reread.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().expect("index")
    }

    /// A share by id.
    pub fn get_share(&self, id: &str) -> Option<Arc<Share>> {
        self.read().share(id)
    }

    /// Shares matching every given filter, ordered by pool and name (as
    /// [`super::list_shares`]).
    pub fn list_shares(
        &self,
        pool: Option<&str>,
        name: Option<&str>,
        id: Option<&str>,
    ) -> Vec<Arc<Share>> {
        self.read().shares(pool, name, id)
    }

    /// Resolve a reference (id, or name with an optional pool) to one share (as
    /// [`super::find_share`], with the same errors).
    pub fn find_share(&self, reference: &str, pool: Option<&str>) -> Result<Arc<Share>> {
        find_share_in(&self.read(), reference, pool)
    }

    /// A snapshot by id.
    pub fn get_snapshot(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.read().snapshot(id)
    }

    /// Snapshots, optionally of one share and/or one pool, oldest first, same-second ones
    /// in the order they were made (as [`super::list_snapshots`]).
    pub fn list_snapshots(&self, share_id: Option<&str>, pool: Option<&str>) -> Vec<Arc<Snapshot>> {
        self.read().snapshots(share_id, pool)
    }

    /// The snapshots of the share `reference` names (resolved as by
    /// [`Index::find_share`]), or of every share, optionally of one pool: one view of the
    /// tables, as `snapshot.list` answers.
    pub fn list_snapshots_of(
        &self,
        reference: Option<&str>,
        pool: Option<&str>,
    ) -> Result<Vec<Arc<Snapshot>>> {
        let t = self.read();
        let share = match reference {
            Some(r) => Some(find_share_in(&t, r, pool)?),
            None => None,
        };
        Ok(t.snapshots(share.as_ref().map(|s| s.id.as_str()), pool))
    }

    /// Every share and every snapshot (of one pool when given) as one view of the tables,
    /// for `tree`.
    pub fn shares_and_snapshots(
        &self,
        pool: Option<&str>,
    ) -> (Vec<Arc<Share>>, Vec<Arc<Snapshot>>) {
        let t = self.read();
        (t.shares(pool, None, None), t.snapshots(None, pool))
    }

    /// Resolve a snapshot reference: an id, or a name (or id) together with its share, in
    /// `pool` when given (as [`super::find_snapshot`], with the same errors).
    pub fn find_snapshot(
        &self,
        reference: &str,
        share: Option<&str>,
        pool: Option<&str>,
    ) -> Result<Arc<Snapshot>> {
        let t = self.read();
        let Some(sref) = share else {
            return t
                .snapshot(reference)
                .filter(|s| pool.is_none_or(|p| p == s.pool))
                .ok_or_else(|| super::snapshots::snapshot_id_not_found(reference, pool));
        };
        let sh = find_share_in(&t, sref, pool)?;
        t.snapshot_of(&sh.id, reference).ok_or_else(|| {
            Error::NotFound(format!("share {} has no snapshot {reference:?}", sh.name))
        })
    }

    /// Numbers of shares and snapshots in the index.
    pub fn counts(&self) -> (usize, usize) {
        self.read().counts()
    }
}

/// [`Index::find_share`] in one view of the tables.
fn find_share_in(t: &Tables, reference: &str, pool: Option<&str>) -> Result<Arc<Share>> {
    if let Some(s) = t.share(reference) {
        if pool.is_none_or(|p| p == s.pool) {
            return Ok(s);
        }
    }
    let mut found = t.shares(pool, Some(reference), None);
    match found.len() {
        0 => Err(Error::NotFound(match pool {
            Some(p) => format!("no share {reference:?} in pool {p}"),
            None => format!("no share {reference:?}"),
        })),
        1 => Ok(found.remove(0)),
        _ => Err(Error::Invalid(format!(
            "share name {reference:?} exists in pools {}; say which with pool",
            found
                .iter()
                .map(|s| s.pool.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

fn sort_unique(v: &mut Vec<i64>) {
    v.sort_unstable();
    v.dedup();
}

#[cfg(test)]
mod tests;
