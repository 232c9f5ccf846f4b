//! Typed queries on the tree, one file per table (`shares`, `snapshots`, `exports`,
//! `attachments`, `intents`, and `totals` for per-pool sums). Each takes a `&Connection`
//! (a `Transaction` derefs to one), so the engine composes them inside one transaction.
//! This file holds what they share, and the tests of their query plans.

/// Whether an insert failed on a UNIQUE or PRIMARY KEY constraint (a name or id taken).
pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// A `WHERE` condition with only the filters given: the i-th condition (parameter
/// `?<i+1>`) when its filter is given, else `?<i+1> IS NULL`, which names no column. The
/// catch-all `(?1 IS NULL OR col = ?1)` would keep SQLite from using any index.
pub(super) fn given_only(conds: &[(bool, &str)]) -> String {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rusqlite::Connection;

    use super::given_only;
    use crate::model::{Share, ShareState, Snapshot};
    use crate::store::shares::shares_sql;
    use crate::store::snapshots::snapshots_sql;
    use crate::store::{find_share, insert_share, insert_snapshot, list_shares, list_snapshots};

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
                group: None,
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
