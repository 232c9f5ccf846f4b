//! Counts across the tree for the metrics: shares and snapshots by pool and state, exports
//! and attachments by driver, pending intents by op. Each is one grouped query; the
//! result has one row per group (pools × states, drivers × protocols), never per object.

use rusqlite::Connection;

use crate::error::Result;

/// Grouped counts: (labels..., count).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeCounts {
    /// (pool, state, shares).
    pub shares: Vec<(String, String, u64)>,
    /// (pool, state, snapshots).
    pub snapshots: Vec<(String, String, u64)>,
    /// (driver, protocol, state, exports).
    pub exports: Vec<(String, String, String, u64)>,
    /// (driver, protocol, attachments); the driver is that of the share's export of the
    /// attachment's protocol (empty when there is none, which recovery repairs).
    pub attachments: Vec<(String, String, u64)>,
    /// (op, intents not yet finished).
    pub intents: Vec<(String, u64)>,
}

fn rows<T>(
    c: &Connection,
    sql: &str,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let out = stmt.query_map([], f)?;
    Ok(out.collect::<rusqlite::Result<_>>()?)
}

fn count(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(i)?.max(0) as u64)
}

/// Read every count, in one call on the database thread.
pub fn tree_counts(c: &Connection) -> Result<TreeCounts> {
    Ok(TreeCounts {
        shares: rows(
            c,
            "SELECT pool, state, count(*) FROM shares GROUP BY pool, state ORDER BY 1, 2",
            |r| Ok((r.get(0)?, r.get(1)?, count(r, 2)?)),
        )?,
        snapshots: rows(
            c,
            "SELECT s.pool, n.state, count(*) FROM snapshots n JOIN shares s ON s.id = n.share_id
             GROUP BY s.pool, n.state ORDER BY 1, 2",
            |r| Ok((r.get(0)?, r.get(1)?, count(r, 2)?)),
        )?,
        exports: rows(
            c,
            "SELECT driver, protocol, state, count(*) FROM exports
             GROUP BY driver, protocol, state ORDER BY 1, 2, 3",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, count(r, 3)?)),
        )?,
        attachments: rows(
            c,
            "SELECT coalesce(e.driver, ''), a.protocol, count(*) FROM attachments a
             LEFT JOIN exports e ON e.share_id = a.share_id AND e.protocol = a.protocol
             GROUP BY 1, 2 ORDER BY 1, 2",
            |r| Ok((r.get(0)?, r.get(1)?, count(r, 2)?)),
        )?,
        intents: rows(
            c,
            "SELECT op, count(*) FROM intents GROUP BY op ORDER BY op",
            |r| Ok((r.get(0)?, count(r, 1)?)),
        )?,
    })
}
