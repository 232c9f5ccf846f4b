//! Queries on the `snapshot_groups` table (group snapshots; their members are rows of
//! `snapshots` carrying `group_id`).

use rusqlite::{params, Connection, OptionalExtension};

use super::queries::is_unique_violation;
use super::snapshots::list_group_snapshots;
use crate::error::{Error, Result};
use crate::model::{ShareState, SnapshotGroup};

/// Insert a group row (without members: they are inserted as snapshots). A name taken in
/// the pool is `already_exists`.
pub fn insert_group(c: &Connection, g: &SnapshotGroup) -> Result<()> {
    c.execute(
        "INSERT INTO snapshot_groups (id, name, pool, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![g.id, g.name, g.pool, g.state.as_str(), g.created_at],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::AlreadyExists(format!(
                "group snapshot {} already exists in pool {}",
                g.name, g.pool
            ))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

fn group_row(c: &Connection, id: &str) -> Result<Option<SnapshotGroup>> {
    let row = c
        .query_row(
            "SELECT id, name, pool, state, created_at FROM snapshot_groups WHERE id = ?1",
            [id],
            |r| {
                let state: String = r.get(3)?;
                Ok(SnapshotGroup {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    pool: r.get(2)?,
                    state: ShareState::parse(&state).unwrap_or(ShareState::Error),
                    created_at: r.get(4)?,
                    snapshots: Vec::new(),
                })
            },
        )
        .optional()?;
    Ok(row)
}

/// The group with this id, with its members.
pub fn get_group(c: &Connection, id: &str) -> Result<Option<SnapshotGroup>> {
    let Some(mut g) = group_row(c, id)? else {
        return Ok(None);
    };
    g.snapshots = list_group_snapshots(c, &g.id)?;
    Ok(Some(g))
}

/// The group named by id, or by name (in `pool` when names repeat across pools).
pub fn find_group(c: &Connection, reference: &str, pool: Option<&str>) -> Result<SnapshotGroup> {
    let mut stmt = c.prepare_cached(
        "SELECT id FROM snapshot_groups WHERE (id = ?1 OR name = ?1)
         AND (?2 IS NULL OR pool = ?2) ORDER BY id = ?1 DESC LIMIT 2",
    )?;
    let ids: Vec<String> = stmt
        .query_map(params![reference, pool], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    match ids.as_slice() {
        [] => Err(Error::NotFound(format!("no group snapshot {reference:?}"))),
        [one, ..] if one == reference || ids.len() == 1 => get_group(c, one)?
            .ok_or_else(|| Error::NotFound(format!("no group snapshot {reference:?}"))),
        _ => Err(Error::Invalid(format!(
            "group snapshot name {reference:?} is in several pools; give the pool"
        ))),
    }
}

/// Every group (of `pool`, when given), oldest first, with members.
pub fn list_groups(c: &Connection, pool: Option<&str>) -> Result<Vec<SnapshotGroup>> {
    let mut stmt = c.prepare_cached(
        "SELECT id FROM snapshot_groups WHERE ?1 IS NULL OR pool = ?1
         ORDER BY created_at, name",
    )?;
    let ids: Vec<String> = stmt
        .query_map(params![pool], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(get_group(c, &id)?);
    }
    Ok(out)
}

/// Set a group's state and its members' (one transaction is the caller's).
pub fn set_group_state(c: &Connection, id: &str, state: ShareState) -> Result<()> {
    c.execute(
        "UPDATE snapshot_groups SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    c.execute(
        "UPDATE snapshots SET state = ?2 WHERE group_id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Remove a group's row and its members' rows.
pub fn delete_group_rows(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM snapshots WHERE group_id = ?1", [id])?;
    c.execute("DELETE FROM snapshot_groups WHERE id = ?1", [id])?;
    Ok(())
}
