//! Per-pool totals and reads across the whole tree (shares and snapshots together).

use rusqlite::{Connection, OptionalExtension};

use super::shares::list_shares;
use super::snapshots::list_snapshots;
use crate::error::Result;
use crate::model::{Share, ShareState, Snapshot};

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
/// The pools that shares live in, by name.
pub fn pools_in_use(c: &Connection) -> Result<Vec<String>> {
    let mut stmt = c.prepare("SELECT DISTINCT pool FROM shares ORDER BY pool")?;
    let pools = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(pools.collect::<rusqlite::Result<Vec<_>>>()?)
}
