//! Queries on the `snapshots` table.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::queries::{given_only, is_unique_violation};
use super::shares::find_share;
use crate::error::{Error, Result};
use crate::model::{ShareState, Snapshot};

const SNAP_COLS: &str =
    "n.id, n.name, n.share_id, s.name, s.pool, n.size, n.state, n.created_at, n.group_id";

/// The one mapping of a `snapshots` row joined with its share (columns [`SNAP_COLS`], in
/// order) to a [`Snapshot`]: the queries and the in-memory index (super::index) both read
/// rows through it, so a new column mapped here is in both.
pub(super) fn snapshot_from_row(r: &Row<'_>) -> rusqlite::Result<Snapshot> {
    let state: String = r.get(6)?;
    Ok(Snapshot {
        id: r.get(0)?,
        name: r.get(1)?,
        share: r.get(2)?,
        share_name: r.get(3)?,
        pool: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        state: ShareState::parse(&state).unwrap_or(ShareState::Error),
        created_at: r.get(7)?,
        group: r.get(8)?,
    })
}

/// Snapshots by `rowid` (absent rowids are left out), each with its rowid: how the index
/// reloads the rows a transaction changed. `None` reads every snapshot (the index's load).
pub(super) fn snapshots_by_rowid(
    c: &Connection,
    rowids: Option<&[i64]>,
) -> Result<Vec<(i64, Snapshot)>> {
    let map = |r: &Row<'_>| Ok((r.get::<_, i64>("index_rowid")?, snapshot_from_row(r)?));
    let sql = format!(
        "SELECT {SNAP_COLS}, n.rowid AS index_rowid FROM snapshots n JOIN shares s ON s.id = n.share_id"
    );
    let Some(rowids) = rowids else {
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map([], map)?;
        return Ok(rows.collect::<rusqlite::Result<_>>()?);
    };
    let mut stmt = c.prepare_cached(&format!("{sql} WHERE n.rowid = ?1"))?;
    let mut out = Vec::with_capacity(rowids.len());
    for id in rowids {
        out.extend(stmt.query_row([id], map).optional()?);
    }
    Ok(out)
}

/// Insert a snapshot row. A name taken on the share is `already_exists`.
pub fn insert_snapshot(c: &Connection, s: &Snapshot) -> Result<()> {
    c.execute(
        "INSERT INTO snapshots (id, name, share_id, size, state, created_at, group_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            s.id,
            s.name,
            s.share,
            s.size as i64,
            s.state.as_str(),
            s.created_at,
            s.group
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::AlreadyExists(format!(
                "snapshot {} already exists on share {}",
                s.name, s.share_name
            ))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// A snapshot by id.
pub fn get_snapshot(c: &Connection, id: &str) -> Result<Option<Snapshot>> {
    Ok(c.query_row(
        &format!("SELECT {SNAP_COLS} FROM snapshots n JOIN shares s ON s.id = n.share_id WHERE n.id = ?1"),
        [id],
        snapshot_from_row,
    )
    .optional()?)
}

/// Snapshots, optionally of one share and/or one pool, oldest first. As in
/// [`list_shares`], only the filters given are in the query, so the `share_id` index serves
/// the per-share case instead of a scan of every snapshot.
pub fn list_snapshots(
    c: &Connection,
    share_id: Option<&str>,
    pool: Option<&str>,
) -> Result<Vec<Snapshot>> {
    let sql = snapshots_sql(share_id.is_some(), pool.is_some());
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![share_id, pool], snapshot_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The query of [`list_snapshots`] (parameters `?1` share id, `?2` pool, both always
/// bound; a filter not given is `?N IS NULL`, outside any column's condition).
pub(super) fn snapshots_sql(share: bool, pool: bool) -> String {
    format!(
        "SELECT {SNAP_COLS} FROM snapshots n JOIN shares s ON s.id = n.share_id
         WHERE {} ORDER BY n.created_at, n.rowid",
        given_only(&[(share, "n.share_id = ?1"), (pool, "s.pool = ?2")])
    )
}

/// Resolve a snapshot reference: an id, or a name together with its share. `pool`, when
/// given, bounds both forms: a snapshot whose share is in another pool is `not_found`, as
/// a share named in another pool is.
pub fn find_snapshot(
    c: &Connection,
    reference: &str,
    share: Option<&str>,
    pool: Option<&str>,
) -> Result<Snapshot> {
    match share {
        None => get_snapshot(c, reference)?
            .filter(|s| pool.is_none_or(|p| p == s.pool))
            .ok_or_else(|| snapshot_id_not_found(reference, pool)),
        Some(sref) => {
            let sh = find_share(c, sref, pool)?;
            let id: Option<String> = c
                .query_row(
                    "SELECT id FROM snapshots WHERE share_id = ?1 AND (name = ?2 OR id = ?2)",
                    [&sh.id, reference],
                    |r| r.get(0),
                )
                .optional()?;
            match id {
                Some(id) => {
                    get_snapshot(c, &id)?.ok_or_else(|| Error::Internal("snapshot vanished".into()))
                }
                None => Err(Error::NotFound(format!(
                    "share {} has no snapshot {reference:?}",
                    sh.name
                ))),
            }
        }
    }
}

/// The `not_found` of a snapshot named by id alone (shared with the index's lookup).
pub(super) fn snapshot_id_not_found(reference: &str, pool: Option<&str>) -> Error {
    Error::NotFound(match pool {
        Some(p) => format!("no snapshot with id {reference:?} in pool {p}"),
        None => {
            format!("no snapshot with id {reference:?} (to name a snapshot, give its share too)")
        }
    })
}

/// The member snapshots of group snapshot `group_id`, by share name.
pub fn list_group_snapshots(c: &Connection, group_id: &str) -> Result<Vec<Snapshot>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {SNAP_COLS} FROM snapshots n JOIN shares s ON s.id = n.share_id
         WHERE n.group_id = ?1 ORDER BY s.name, n.id"
    ))?;
    let rows = stmt.query_map([group_id], snapshot_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Set a snapshot's state.
pub fn set_snapshot_state(c: &Connection, id: &str, state: ShareState) -> Result<()> {
    c.execute(
        "UPDATE snapshots SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Remove a snapshot's row.
pub fn delete_snapshot_row(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
    Ok(())
}

/// Number of snapshots of a share.
pub fn count_snapshots(c: &Connection, share_id: &str) -> Result<usize> {
    let n: i64 = c.query_row(
        "SELECT count(*) FROM snapshots WHERE share_id = ?1",
        [share_id],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// The snapshot of share `share_id` named `name`, found with the `UNIQUE (share_id, name)`
/// index (a snapshot create checks its name with it, whatever the share's count).
pub fn get_snapshot_by_name(
    c: &Connection,
    share_id: &str,
    name: &str,
) -> Result<Option<Snapshot>> {
    let id: Option<String> = c
        .query_row(
            "SELECT id FROM snapshots WHERE share_id = ?1 AND name = ?2",
            [share_id, name],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => get_snapshot(c, &id),
        None => Ok(None),
    }
}
