//! Typed queries on the tree. Each takes a `&Connection` (a `Transaction` derefs to one),
//! so the engine composes them inside one transaction.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{Error, Result};
use crate::model::{Share, ShareState, Snapshot};

const SHARE_COLS: &str = "id, name, pool, size, sparse, state, created_at, origin_snapshot, \
                          origin_share, metadata, multiattach, layout, filesystem";

fn share_from_row(r: &Row<'_>) -> rusqlite::Result<Share> {
    let state: String = r.get(5)?;
    let meta: String = r.get(9)?;
    Ok(Share {
        id: r.get(0)?,
        name: r.get(1)?,
        pool: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        sparse: r.get(4)?,
        state: ShareState::parse(&state).unwrap_or(ShareState::Error),
        created_at: r.get(6)?,
        origin_snapshot: r.get(7)?,
        origin_share: r.get(8)?,
        metadata: serde_json::from_str(&meta).unwrap_or_default(),
        multiattach: r.get(10)?,
        layout: crate::model::Layout::parse(&r.get::<_, String>(11)?).unwrap_or_default(),
        filesystem: r
            .get::<_, Option<String>>(12)?
            .and_then(|f| crate::model::FsKind::parse(&f)),
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Insert a share row. A name taken in the pool is `already_exists`.
pub fn insert_share(c: &Connection, s: &Share) -> Result<()> {
    let meta = serde_json::to_string(&s.metadata).expect("a string map serialises");
    c.execute(
        &format!(
            "INSERT INTO shares ({SHARE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
            s.id,
            s.name,
            s.pool,
            s.size as i64,
            s.sparse,
            s.state.as_str(),
            s.created_at,
            s.origin_snapshot,
            s.origin_share,
            meta,
            s.multiattach,
            s.layout.as_str(),
            s.filesystem.map(|f| f.as_str())
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::AlreadyExists(format!(
                "share {} already exists in pool {}",
                s.name, s.pool
            ))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// A share by id.
pub fn get_share(c: &Connection, id: &str) -> Result<Option<Share>> {
    Ok(c.query_row(
        &format!("SELECT {SHARE_COLS} FROM shares WHERE id = ?1"),
        [id],
        share_from_row,
    )
    .optional()?)
}

/// A share by name in a pool.
pub fn get_share_by_name(c: &Connection, pool: &str, name: &str) -> Result<Option<Share>> {
    Ok(c.query_row(
        &format!("SELECT {SHARE_COLS} FROM shares WHERE pool = ?1 AND name = ?2"),
        [pool, name],
        share_from_row,
    )
    .optional()?)
}

/// Resolve a reference (id, or name with an optional pool) to one share.
pub fn find_share(c: &Connection, reference: &str, pool: Option<&str>) -> Result<Share> {
    if let Some(s) = get_share(c, reference)? {
        if pool.is_none_or(|p| p == s.pool) {
            return Ok(s);
        }
    }
    let mut found = list_shares(c, pool, Some(reference), None)?;
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

/// Shares matching every given filter, ordered by pool and name.
///
/// Only the filters given go into the `WHERE` clause, so SQLite can use the `(pool, name)`
/// index: the catch-all form `(?1 IS NULL OR pool = ?1) AND ...` cannot use an index and
/// made every lookup by name a scan of the whole table (O(shares) per request).
pub fn list_shares(
    c: &Connection,
    pool: Option<&str>,
    name: Option<&str>,
    id: Option<&str>,
) -> Result<Vec<Share>> {
    let mut args: Vec<(&str, &dyn rusqlite::ToSql)> = Vec::new();
    for (key, value) in [(":pool", &pool), (":name", &name), (":id", &id)] {
        if let Some(v) = value {
            args.push((key, v));
        }
    }
    let sql = shares_sql(pool.is_some(), name.is_some(), id.is_some());
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(args.as_slice(), share_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The query of [`list_shares`] for the filters given (named parameters `:pool`, `:name`,
/// `:id`).
fn shares_sql(pool: bool, name: bool, id: bool) -> String {
    let mut conds = Vec::new();
    for (given, cond) in [
        (pool, "pool = :pool"),
        (name, "name = :name"),
        (id, "id = :id"),
    ] {
        if given {
            conds.push(cond);
        }
    }
    if name && !pool {
        conds.push(IN_ANY_POOL);
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    format!("SELECT {SHARE_COLS} FROM shares {filter} ORDER BY pool, name")
}

/// `pool IN (every pool that has shares)`, found by one index seek per pool (a loose index
/// scan), so that a lookup by name alone still searches the `(pool, name)` index.
const IN_ANY_POOL: &str = "pool IN (WITH RECURSIVE p(pool) AS (
        SELECT (SELECT min(pool) FROM shares)
        UNION ALL
        SELECT (SELECT min(pool) FROM shares WHERE pool > p.pool) FROM p WHERE p.pool IS NOT NULL)
    SELECT pool FROM p WHERE pool IS NOT NULL)";

/// Set a share's state.
pub fn set_share_state(c: &Connection, id: &str, state: ShareState) -> Result<()> {
    c.execute(
        "UPDATE shares SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Set a share's size.
pub fn set_share_size(c: &Connection, id: &str, size: u64) -> Result<()> {
    c.execute(
        "UPDATE shares SET size = ?2 WHERE id = ?1",
        params![id, size as i64],
    )?;
    Ok(())
}

/// Replace a share's metadata.
pub fn set_share_metadata(c: &Connection, id: &str, meta: &BTreeMap<String, String>) -> Result<()> {
    let text = serde_json::to_string(meta).expect("a string map serialises");
    c.execute(
        "UPDATE shares SET metadata = ?2 WHERE id = ?1",
        params![id, text],
    )?;
    Ok(())
}

/// Remove a share's row.
pub fn delete_share_row(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM shares WHERE id = ?1", [id])?;
    Ok(())
}

const SNAP_COLS: &str = "n.id, n.name, n.share_id, s.name, s.pool, n.size, n.state, n.created_at";

fn snapshot_from_row(r: &Row<'_>) -> rusqlite::Result<Snapshot> {
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
    })
}

/// Insert a snapshot row. A name taken on the share is `already_exists`.
pub fn insert_snapshot(c: &Connection, s: &Snapshot) -> Result<()> {
    c.execute(
        "INSERT INTO snapshots (id, name, share_id, size, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            s.id,
            s.name,
            s.share,
            s.size as i64,
            s.state.as_str(),
            s.created_at
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
fn snapshots_sql(share: bool, pool: bool) -> String {
    format!(
        "SELECT {SNAP_COLS} FROM snapshots n JOIN shares s ON s.id = n.share_id
         WHERE {} ORDER BY n.created_at, n.rowid",
        given_only(&[(share, "n.share_id = ?1"), (pool, "s.pool = ?2")])
    )
}

/// A `WHERE` condition with only the filters given: the i-th condition (parameter
/// `?<i+1>`) when its filter is given, else `?<i+1> IS NULL`, which names no column. The
/// catch-all `(?1 IS NULL OR col = ?1)` would keep SQLite from using any index.
fn given_only(conds: &[(bool, &str)]) -> String {
    conds
        .iter()
        .enumerate()
        .map(|(i, (given, cond))| {
            if *given {
                cond.to_string()
            } else {
                format!("?{} IS NULL", i + 1)
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Resolve a snapshot reference: an id, or a name together with its share.
pub fn find_snapshot(
    c: &Connection,
    reference: &str,
    share: Option<&str>,
    pool: Option<&str>,
) -> Result<Snapshot> {
    match share {
        None => get_snapshot(c, reference)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no snapshot with id {reference:?} (to name a snapshot, give its share too)"
            ))
        }),
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

/// Per-pool totals: provisioned bytes, share count, snapshot count.
pub fn pool_totals(c: &Connection, pool: &str) -> Result<(u64, u64, u64)> {
    let (prov, shares): (i64, i64) = c.query_row(
        "SELECT coalesce(sum(size), 0), count(*) FROM shares WHERE pool = ?1",
        [pool],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let snaps: i64 = c.query_row(
        "SELECT count(*) FROM snapshots n JOIN shares s ON s.id = n.share_id WHERE s.pool = ?1",
        [pool],
        |r| r.get(0),
    )?;
    Ok((prov as u64, shares as u64, snaps as u64))
}

/// The sum of a pool's share sizes, kept by triggers (one row read).
pub fn provisioned(c: &Connection, pool: &str) -> Result<u64> {
    Ok(c.query_row(
        "SELECT provisioned FROM pool_usage WHERE pool = ?1",
        [pool],
        |r| r.get::<_, i64>(0),
    )
    .optional()?
    .unwrap_or(0)
    .max(0) as u64)
}

/// Every share and every snapshot, in the orders of [`list_shares`] and [`list_snapshots`].
pub fn all_shares_and_snapshots(c: &Connection) -> Result<(Vec<Share>, Vec<Snapshot>)> {
    Ok((
        list_shares(c, None, None, None)?,
        list_snapshots(c, None, None)?,
    ))
}

/// Shares and snapshots not in a settled state (`creating`, `deleting`): the work a crash
/// interrupted.
pub fn unsettled(c: &Connection) -> Result<(Vec<Share>, Vec<Snapshot>)> {
    let shares = list_shares(c, None, None, None)?
        .into_iter()
        .filter(|s| matches!(s.state, ShareState::Creating | ShareState::Deleting))
        .collect();
    let snaps = list_snapshots(c, None, None)?
        .into_iter()
        .filter(|s| matches!(s.state, ShareState::Creating | ShareState::Deleting))
        .collect();
    Ok((shares, snaps))
}

/// An unfinished step recorded before it was taken (see `engine::recover`).
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// Row id.
    pub id: i64,
    /// What is being done (`share.resize`, ...).
    pub op: String,
    /// The object's id.
    pub object: String,
    /// The step's parameters, JSON.
    pub data: serde_json::Value,
}

/// Record an intent; returns its id.
pub fn insert_intent(
    c: &Connection,
    op: &str,
    object: &str,
    data: &serde_json::Value,
) -> Result<i64> {
    c.execute(
        "INSERT INTO intents (op, object, data, started_at) VALUES (?1, ?2, ?3, ?4)",
        params![op, object, data.to_string(), crate::store::now()],
    )?;
    Ok(c.last_insert_rowid())
}

/// Forget a finished intent.
pub fn delete_intent(c: &Connection, id: i64) -> Result<()> {
    c.execute("DELETE FROM intents WHERE id = ?1", [id])?;
    Ok(())
}

/// Every unfinished intent, oldest first.
pub fn list_intents(c: &Connection) -> Result<Vec<Intent>> {
    let mut stmt = c.prepare("SELECT id, op, object, data FROM intents ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        let data: String = r.get(3)?;
        Ok(Intent {
            id: r.get(0)?,
            op: r.get(1)?,
            object: r.get(2)?,
            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A stored export row, with its secret (the engine never sends the secret in `export.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    /// The export (attached clients filled in).
    pub export: crate::model::Export,
    /// CHAP secret, for iSCSI.
    pub chap_secret: Option<String>,
}

const EXPORT_COLS: &str = "e.id, e.share_id, s.name, e.protocol, e.driver, e.state, e.options, \
                           e.target, e.tid, e.fsid, e.chap_user, e.chap_secret, e.created_at";

fn export_from_row(r: &Row<'_>) -> rusqlite::Result<ExportRow> {
    use crate::model::{Driver, Export, Protocol};
    let protocol: String = r.get(3)?;
    let driver: String = r.get(4)?;
    let state: String = r.get(5)?;
    let options: String = r.get(6)?;
    Ok(ExportRow {
        export: Export {
            id: r.get(0)?,
            share: r.get(1)?,
            share_name: r.get(2)?,
            protocol: Protocol::parse(&protocol).unwrap_or(Protocol::Nfs),
            driver: Driver::parse(&driver).unwrap_or(Driver::Kernel),
            state: ShareState::parse(&state).unwrap_or(ShareState::Error),
            options: serde_json::from_str(&options).unwrap_or_default(),
            target: r.get(7)?,
            tid: r.get(8)?,
            fsid: r.get(9)?,
            chap_user: r.get(10)?,
            attached: Vec::new(),
            created_at: r.get(12)?,
        },
        chap_secret: r.get(11)?,
    })
}

/// Fill in each export's attached clients.
fn with_attached(c: &Connection, mut rows: Vec<ExportRow>) -> Result<Vec<ExportRow>> {
    for row in &mut rows {
        let mut stmt = c.prepare_cached(
            "SELECT client, mode FROM attachments WHERE share_id = ?1 AND protocol = ?2 ORDER BY created_at, rowid",
        )?;
        let attached = stmt.query_map(
            params![row.export.share, row.export.protocol.as_str()],
            |r| {
                let mode: String = r.get(1)?;
                Ok(crate::model::Attached {
                    client: r.get(0)?,
                    mode: if mode == "ro" {
                        crate::model::Access::Ro
                    } else {
                        crate::model::Access::Rw
                    },
                })
            },
        )?;
        row.export.attached = attached.collect::<rusqlite::Result<_>>()?;
    }
    Ok(rows)
}

/// Insert an export row. A second export of the same protocol on a share is
/// `already_exists`.
pub fn insert_export(c: &Connection, e: &crate::model::Export, secret: Option<&str>) -> Result<()> {
    let options = serde_json::to_string(&e.options).expect("options serialise");
    c.execute(
        "INSERT INTO exports (id, share_id, protocol, driver, state, options, target, tid, fsid,
                              chap_user, chap_secret, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            e.id,
            e.share,
            e.protocol.as_str(),
            e.driver.as_str(),
            e.state.as_str(),
            options,
            e.target,
            e.tid,
            e.fsid,
            e.chap_user,
            secret,
            e.created_at
        ],
    )
    .map_err(|err| {
        if is_unique_violation(&err) {
            Error::AlreadyExists(format!(
                "share {} already has an {} export",
                e.share_name,
                e.protocol.as_str()
            ))
        } else {
            err.into()
        }
    })?;
    Ok(())
}

/// Exports, optionally of one share and/or one driver.
pub fn list_exports(
    c: &Connection,
    share_id: Option<&str>,
    driver: Option<crate::model::Driver>,
) -> Result<Vec<ExportRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {EXPORT_COLS} FROM exports e JOIN shares s ON s.id = e.share_id
         WHERE {} ORDER BY s.name, e.protocol",
        given_only(&[
            (share_id.is_some(), "e.share_id = ?1"),
            (driver.is_some(), "e.driver = ?2")
        ])
    ))?;
    let rows = stmt
        .query_map(
            params![share_id, driver.map(|d| d.as_str())],
            export_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    with_attached(c, rows)
}

/// The export of a share for a protocol.
pub fn get_export(
    c: &Connection,
    share_id: &str,
    protocol: crate::model::Protocol,
) -> Result<Option<ExportRow>> {
    let row = c
        .query_row(
            &format!(
                "SELECT {EXPORT_COLS} FROM exports e JOIN shares s ON s.id = e.share_id
                 WHERE e.share_id = ?1 AND e.protocol = ?2"
            ),
            params![share_id, protocol.as_str()],
            export_from_row,
        )
        .optional()?;
    Ok(with_attached(c, row.into_iter().collect())?.pop())
}

/// An export by id.
pub fn get_export_by_id(c: &Connection, id: &str) -> Result<Option<ExportRow>> {
    let row = c
        .query_row(
            &format!("SELECT {EXPORT_COLS} FROM exports e JOIN shares s ON s.id = e.share_id WHERE e.id = ?1"),
            [id],
            export_from_row,
        )
        .optional()?;
    Ok(with_attached(c, row.into_iter().collect())?.pop())
}

/// Set an export's state.
pub fn set_export_state(c: &Connection, id: &str, state: ShareState) -> Result<()> {
    c.execute(
        "UPDATE exports SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Remove an export row.
pub fn delete_export_row(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM exports WHERE id = ?1", [id])?;
    Ok(())
}

/// The next free tgt target id and NFS fsid (both start at 1 and are never reused while
/// the export that holds them exists).
pub fn next_ids(c: &Connection) -> Result<(u32, u32)> {
    let (tid, fsid): (i64, i64) = c.query_row(
        "SELECT coalesce(max(tid), 0) + 1, coalesce(max(fsid), 1000) + 1 FROM exports",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((tid as u32, fsid as u32))
}

const ATTACH_COLS: &str = "a.id, a.share_id, s.name, a.protocol, a.client, a.host, a.ip, a.initiator, a.mode, a.created_at";

fn attachment_from_row(r: &Row<'_>) -> rusqlite::Result<crate::model::Attachment> {
    let protocol: String = r.get(3)?;
    let mode: String = r.get(8)?;
    Ok(crate::model::Attachment {
        id: r.get(0)?,
        share: r.get(1)?,
        share_name: r.get(2)?,
        protocol: crate::model::Protocol::parse(&protocol).unwrap_or(crate::model::Protocol::Nfs),
        client: r.get(4)?,
        host: r.get(5)?,
        ip: r.get(6)?,
        initiator: r.get(7)?,
        mode: if mode == "ro" {
            crate::model::Access::Ro
        } else {
            crate::model::Access::Rw
        },
        created_at: r.get(9)?,
    })
}

/// Insert an attachment.
pub fn insert_attachment(c: &Connection, a: &crate::model::Attachment) -> Result<()> {
    c.execute(
        "INSERT INTO attachments (id, share_id, protocol, client, host, ip, initiator, mode, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            a.id,
            a.share,
            a.protocol.as_str(),
            a.client,
            a.host,
            a.ip,
            a.initiator,
            a.mode.as_str(),
            a.created_at
        ],
    )?;
    Ok(())
}

/// Attachments, optionally of one share.
pub fn list_attachments(
    c: &Connection,
    share_id: Option<&str>,
) -> Result<Vec<crate::model::Attachment>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {ATTACH_COLS} FROM attachments a JOIN shares s ON s.id = a.share_id
         WHERE {} ORDER BY s.name, a.created_at, a.rowid",
        given_only(&[(share_id.is_some(), "a.share_id = ?1")])
    ))?;
    let rows = stmt.query_map(params![share_id], attachment_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Remove an attachment row.
pub fn delete_attachment_row(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM attachments WHERE id = ?1", [id])?;
    Ok(())
}

/// Remove an export row together with the share's attachments over its protocol.
pub fn delete_export_and_attachments(
    c: &Connection,
    export_id: &str,
    share_id: &str,
    protocol: crate::model::Protocol,
) -> Result<()> {
    c.execute(
        "DELETE FROM attachments WHERE share_id = ?1 AND protocol = ?2",
        params![share_id, protocol.as_str()],
    )?;
    delete_export_row(c, export_id)
}

/// The pools that shares live in, by name.
pub fn pools_in_use(c: &Connection) -> Result<Vec<String>> {
    let mut stmt = c.prepare("SELECT DISTINCT pool FROM shares ORDER BY pool")?;
    let pools = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(pools.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::open_connection(&dir.path().join("t.db")).unwrap();
        (dir, c)
    }

    fn share(id: &str, name: &str, pool: &str) -> Share {
        Share {
            id: id.into(),
            name: name.into(),
            pool: pool.into(),
            size: 512,
            sparse: true,
            multiattach: false,
            state: ShareState::Available,
            created_at: 1,
            origin_snapshot: None,
            origin_share: None,
            metadata: BTreeMap::new(),
            layout: Default::default(),
            filesystem: None,
        }
    }

    fn plan(c: &Connection, sql: &str) -> String {
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = st.parameter_count();
        let args: Vec<String> = (0..n).map(|_| "x".to_string()).collect();
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn every_filter_combination_finds_the_right_shares() {
        let (_d, c) = db();
        for (id, name, pool) in [("1", "a", "p1"), ("2", "b", "p1"), ("3", "a", "p2")] {
            insert_share(&c, &share(id, name, pool)).unwrap();
        }
        let ids = |v: Vec<Share>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(list_shares(&c, None, None, None).unwrap()),
            ["1", "2", "3"]
        );
        assert_eq!(
            ids(list_shares(&c, Some("p1"), None, None).unwrap()),
            ["1", "2"]
        );
        assert_eq!(
            ids(list_shares(&c, None, Some("a"), None).unwrap()),
            ["1", "3"]
        );
        assert_eq!(
            ids(list_shares(&c, Some("p2"), Some("a"), None).unwrap()),
            ["3"]
        );
        assert_eq!(ids(list_shares(&c, None, None, Some("2")).unwrap()), ["2"]);
        assert!(list_shares(&c, Some("p2"), Some("b"), None)
            .unwrap()
            .is_empty());
        assert!(list_shares(&c, Some("nope"), None, None)
            .unwrap()
            .is_empty());
        assert_eq!(find_share(&c, "b", None).unwrap().id, "2");
        insert_snapshot(
            &c,
            &Snapshot {
                id: "s1".into(),
                name: "snap".into(),
                share: "3".into(),
                share_name: "a".into(),
                pool: "p2".into(),
                size: 512,
                state: ShareState::Available,
                created_at: 1,
            },
        )
        .unwrap();
        let sn = |share: Option<&str>, pool: Option<&str>| {
            list_snapshots(&c, share, pool).unwrap().len()
        };
        assert_eq!(
            (sn(None, None), sn(Some("3"), None), sn(Some("1"), None)),
            (1, 1, 0)
        );
        assert_eq!((sn(None, Some("p2")), sn(None, Some("p1"))), (1, 0));
        assert_eq!(
            (sn(Some("3"), Some("p2")), sn(Some("3"), Some("p1"))),
            (1, 0)
        );
    }

    /// A lookup by name (with or without its pool) or by share must search an index, not
    /// scan every row: with 10,000 shares the scan made each request cost milliseconds.
    #[test]
    fn lookups_by_name_search_the_index() {
        let (_d, c) = db();
        for (pool, name) in [(true, true), (false, true)] {
            let p = plan(&c, &shares_sql(pool, name, false));
            assert!(p.contains("SEARCH shares USING INDEX"), "{p}");
            assert!(!p.contains("SCAN shares"), "{p}");
        }
        let p = plan(&c, &shares_sql(false, false, true));
        assert!(p.contains("SEARCH shares USING INDEX"), "{p}");
        let p = plan(&c, &snapshots_sql(true, false));
        assert!(p.contains("SEARCH n USING INDEX snapshots_by_share"), "{p}");
        let exports = format!(
            "SELECT e.id FROM exports e JOIN shares s ON s.id = e.share_id WHERE {}",
            given_only(&[(true, "e.share_id = ?1"), (false, "e.driver = ?2")])
        );
        let p = plan(&c, &exports);
        assert!(p.contains("SEARCH e USING INDEX"), "{p}");
        assert_eq!(
            given_only(&[(false, "a = ?1"), (true, "b = ?2")]),
            "?1 IS NULL AND b = ?2"
        );
    }
}
