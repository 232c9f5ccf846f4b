//! Queries on the `shares` table.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::queries::is_unique_violation;
use crate::error::{Error, Result};
use crate::model::{Share, ShareState};

const SHARE_COLS: &str = "id, name, pool, size, sparse, state, created_at, origin_snapshot, \
                          origin_share, metadata, multiattach, layout, filesystem";

/// The one mapping of a `shares` row (columns [`SHARE_COLS`], in order) to a [`Share`]: the
/// queries and the in-memory index (super::index) both read rows through it, so a new
/// column mapped here is in both.
pub(super) fn share_from_row(r: &Row<'_>) -> rusqlite::Result<Share> {
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

/// Shares by `rowid` (absent rowids are left out), each with its rowid: how the index
/// reloads the rows a transaction changed. `None` reads every share (the index's load).
pub(super) fn shares_by_rowid(c: &Connection, rowids: Option<&[i64]>) -> Result<Vec<(i64, Share)>> {
    let map = |r: &Row<'_>| Ok((r.get::<_, i64>("index_rowid")?, share_from_row(r)?));
    let sql = format!("SELECT {SHARE_COLS}, rowid AS index_rowid FROM shares");
    let Some(rowids) = rowids else {
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map([], map)?;
        return Ok(rows.collect::<rusqlite::Result<_>>()?);
    };
    let mut stmt = c.prepare_cached(&format!("{sql} WHERE rowid = ?1"))?;
    let mut out = Vec::with_capacity(rowids.len());
    for id in rowids {
        out.extend(stmt.query_row([id], map).optional()?);
    }
    Ok(out)
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
pub(super) fn shares_sql(pool: bool, name: bool, id: bool) -> String {
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
