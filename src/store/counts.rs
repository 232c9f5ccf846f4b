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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_and_attachments_take_their_exports_driver() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO shares (id, name, pool, size, sparse, state, created_at) VALUES
               ('a', 'a', 'p', 1, 1, 'available', 0), ('b', 'b', 'p', 1, 1, 'available', 0),
               ('c', 'c', 'p', 1, 1, 'error', 0), ('d', 'd', 'q', 1, 1, 'creating', 0);
             INSERT INTO snapshots (id, name, share_id, size, created_at, state) VALUES
               ('s1', 's1', 'a', 1, 0, 'available'), ('s2', 's2', 'd', 1, 0, 'deleting');
             INSERT INTO exports (id, share_id, protocol, driver, state, options, target, created_at)
               VALUES ('e1', 'a', 'iscsi', 'tgt', 'available', '{}', 't', 0),
                      ('e2', 'b', 'nfs', 'kernel', 'available', '{}', 't', 0);
             INSERT INTO attachments (id, share_id, protocol, client, host, mode, created_at) VALUES
               ('x1', 'a', 'iscsi', 'iqn.a', 'h', 'rw', 0), ('x2', 'a', 'iscsi', 'iqn.b', 'h', 'rw', 0),
               ('x3', 'b', 'nfs', '10.0.0.1', 'h', 'ro', 0), ('x4', 'c', 'nfs', '10.0.0.2', 'h', 'rw', 0);
             INSERT INTO intents (op, object, data, started_at) VALUES
               ('share.resize', 'a', '{}', 0), ('share.resize', 'b', '{}', 0);",
        )
        .unwrap();
        let s = |v: &str| v.to_string();
        let got = tree_counts(&c).unwrap();
        assert_eq!(
            got.shares,
            vec![
                (s("p"), s("available"), 2),
                (s("p"), s("error"), 1),
                (s("q"), s("creating"), 1)
            ]
        );
        assert_eq!(
            got.snapshots,
            vec![(s("p"), s("available"), 1), (s("q"), s("deleting"), 1)]
        );
        assert_eq!(
            got.exports,
            vec![
                (s("kernel"), s("nfs"), s("available"), 1),
                (s("tgt"), s("iscsi"), s("available"), 1)
            ]
        );
        // x4's share has no NFS export: its driver is empty.
        assert_eq!(
            got.attachments,
            vec![
                (s(""), s("nfs"), 1),
                (s("kernel"), s("nfs"), 1),
                (s("tgt"), s("iscsi"), 2)
            ]
        );
        assert_eq!(got.intents, vec![(s("share.resize"), 2)]);
    }
}
