//! The index against the SQL queries it stands for, over the real store.

use std::collections::BTreeMap;

use crate::model::{Share, ShareState, Snapshot};
use crate::store::{self, Store};

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

fn snap(id: &str, name: &str, of: &Share, created_at: i64) -> Snapshot {
    Snapshot {
        id: id.into(),
        name: name.into(),
        share: of.id.clone(),
        share_name: of.name.clone(),
        pool: of.pool.clone(),
        size: of.size,
        state: ShareState::Available,
        created_at,
        group: None,
    }
}

/// Every read the index answers, from the index and from SQL, as debug text (the replies
/// are encoded from these values, so equal values are equal bytes).
async fn compare(st: &Store) {
    let refs: Vec<(String, Option<String>)> = vec![
        ("a".into(), None),
        ("a".into(), Some("p1".into())),
        ("a".into(), Some("p2".into())),
        ("b".into(), None),
        ("1".into(), None),
        ("1".into(), Some("p2".into())),
        ("nope".into(), None),
    ];
    for (r, p) in refs {
        let (r2, p2) = (r.clone(), p.clone());
        let sql = st
            .call(move |c| Ok(store::find_share(c, &r2, p2.as_deref()).map_err(|e| e.to_string())))
            .await
            .unwrap();
        let mem = st
            .index()
            .find_share(&r, p.as_deref())
            .map(|s| (*s).clone())
            .map_err(|e| e.to_string());
        assert_eq!(
            format!("{sql:?}"),
            format!("{mem:?}"),
            "find_share {r} {p:?}"
        );
    }
    for pool in [None, Some("p1"), Some("p2"), Some("p3")] {
        for name in [None, Some("a"), Some("b")] {
            for id in [None, Some("1"), Some("3")] {
                let (p, n, i) = (
                    pool.map(String::from),
                    name.map(String::from),
                    id.map(String::from),
                );
                let sql = st
                    .call(move |c| store::list_shares(c, p.as_deref(), n.as_deref(), i.as_deref()))
                    .await
                    .unwrap();
                let mem: Vec<Share> = st
                    .index()
                    .list_shares(pool, name, id)
                    .iter()
                    .map(|s| (**s).clone())
                    .collect();
                assert_eq!(sql, mem, "list_shares {pool:?} {name:?} {id:?}");
            }
        }
    }
    for share_id in [None, Some("1"), Some("2"), Some("3")] {
        for pool in [None, Some("p1"), Some("p2")] {
            let (s, p) = (share_id.map(String::from), pool.map(String::from));
            let sql = st
                .call(move |c| store::list_snapshots(c, s.as_deref(), p.as_deref()))
                .await
                .unwrap();
            let mem: Vec<Snapshot> = st
                .index()
                .list_snapshots(share_id, pool)
                .iter()
                .map(|s| (**s).clone())
                .collect();
            assert_eq!(sql, mem, "list_snapshots {share_id:?} {pool:?}");
        }
    }
    for pool in [None, Some("p1"), Some("p2")] {
        for (r, sh) in [
            ("s1", None),
            ("s3", None),
            ("x", Some("a")),
            ("y", Some("1")),
            ("s2", Some("1")),
            ("zz", Some("a")),
        ] {
            compare_find_snapshot(st, r, sh, pool).await;
        }
    }
}

/// `find_snapshot` from the index and from SQL, as debug text.
async fn compare_find_snapshot(st: &Store, r: &str, sh: Option<&str>, pool: Option<&str>) {
    let (r2, sh2, p2) = (r.to_string(), sh.map(String::from), pool.map(String::from));
    let sql = st
        .call(move |c| {
            Ok(store::find_snapshot(c, &r2, sh2.as_deref(), p2.as_deref())
                .map_err(|e| e.to_string()))
        })
        .await
        .unwrap();
    let mem = st
        .index()
        .find_snapshot(r, sh, pool)
        .map(|s| (*s).clone())
        .map_err(|e| e.to_string());
    assert_eq!(
        format!("{sql:?}"),
        format!("{mem:?}"),
        "find_snapshot {r} {sh:?} {pool:?}"
    );
}

/// A snapshot named by id alone is bounded by `pool` as a share is: an id whose share is
/// in another pool is `not_found`, from SQL and from the index alike.
#[test]
fn a_snapshot_id_in_another_pool_is_not_found() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("t.db")).await.unwrap();
        let (a1, a2) = (share("1", "a", "p1"), share("2", "a", "p2"));
        let (s1, s2) = (snap("s1", "x", &a1, 5), snap("s2", "x", &a2, 5));
        st.write(move |c| {
            store::insert_share(c, &a1)?;
            store::insert_share(c, &a2)?;
            store::insert_snapshot(c, &s1)?;
            store::insert_snapshot(c, &s2)
        })
        .await
        .unwrap();
        type Found = std::result::Result<String, crate::proto::ErrorCode>;
        let sql = |r: &'static str, p: Option<&'static str>| {
            st.call(move |c| {
                Ok::<Found, _>(
                    store::find_snapshot(c, r, None, p)
                        .map(|s| s.id)
                        .map_err(|e| e.code()),
                )
            })
        };
        let mem = |r: &str, p: Option<&str>| -> Found {
            st.index()
                .find_snapshot(r, None, p)
                .map(|s| s.id.clone())
                .map_err(|e| e.code())
        };
        use crate::proto::ErrorCode::NotFound;
        for (r, p, want) in [
            ("s1", Some("p1"), Ok("s1".to_string())),
            ("s1", Some("p2"), Err(NotFound)),
            ("s2", Some("p1"), Err(NotFound)),
            ("s2", Some("p2"), Ok("s2".to_string())),
            ("s2", None, Ok("s2".to_string())),
            ("s1", Some("p3"), Err(NotFound)),
        ] {
            assert_eq!(sql(r, p).await.unwrap(), want, "SQL {r} {p:?}");
            assert_eq!(mem(r, p), want, "index {r} {p:?}");
        }
        let msg = st
            .index()
            .find_snapshot("s1", None, Some("p2"))
            .unwrap_err();
        assert!(msg.to_string().contains("in pool p2"), "{msg}");
        // Named with its share, the pool already bounded the lookup.
        assert_eq!(mem("x", None).unwrap_err(), NotFound);
        let named = st
            .index()
            .find_snapshot("x", Some("a"), Some("p2"))
            .unwrap();
        assert_eq!(named.id, "s2");
        compare(&st).await;
        st.close().await;
    });
}

#[test]
fn the_index_answers_as_the_queries_through_every_change() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let st = Store::open(&path).await.unwrap();
        compare(&st).await;
        let (a1, b1, a2) = (
            share("1", "a", "p1"),
            share("2", "b", "p1"),
            share("3", "a", "p2"),
        );
        let rows = (a1.clone(), b1.clone(), a2.clone());
        st.write(move |c| {
            store::insert_share(c, &rows.0)?;
            store::insert_share(c, &rows.1)?;
            store::insert_share(c, &rows.2)
        })
        .await
        .unwrap();
        compare(&st).await;
        // Same-second snapshots keep the order they were made in; one older is first.
        let snaps = vec![
            snap("s1", "x", &a1, 5),
            snap("s2", "y", &a1, 5),
            snap("s3", "x", &a2, 5),
            snap("s4", "z", &a1, 4),
        ];
        for s in snaps {
            st.write(move |c| store::insert_snapshot(c, &s))
                .await
                .unwrap();
        }
        compare(&st).await;
        assert_eq!(
            st.index()
                .list_snapshots(None, None)
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["s4", "s1", "s2", "s3"]
        );
        st.write(|c| {
            store::set_share_size(c, "1", 4096)?;
            store::set_share_metadata(c, "2", &BTreeMap::from([("k".into(), "v".into())]))?;
            store::set_snapshot_state(c, "s2", ShareState::Deleting)
        })
        .await
        .unwrap();
        compare(&st).await;
        assert_eq!(st.index().get_share("1").unwrap().size, 4096);
        // A rollback leaves the index as it was.
        let failed = st
            .write(|c| {
                store::delete_snapshot_row(c, "s1")?;
                store::set_share_size(c, "3", 1)?;
                store::insert_share(c, &share("4", "c", "p1"))?;
                Err::<(), _>(crate::error::Error::Invalid("rolled back".into()))
            })
            .await;
        assert!(failed.is_err());
        compare(&st).await;
        assert!(st.index().get_snapshot("s1").is_some());
        assert!(st.index().get_share("4").is_none());
        assert_eq!(st.index().get_share("3").unwrap().size, 512);
        // A rename shows in the share's snapshots' rows.
        st.write(|c| {
            c.execute("UPDATE shares SET name = 'renamed' WHERE id = '1'", [])?;
            Ok(())
        })
        .await
        .unwrap();
        compare(&st).await;
        assert_eq!(st.index().get_snapshot("s1").unwrap().share_name, "renamed");
        st.write(|c| {
            store::delete_snapshot_row(c, "s3")?;
            store::delete_share_row(c, "3")
        })
        .await
        .unwrap();
        compare(&st).await;
        assert_eq!(st.index().counts(), (2, 3));
        // Another connection's commit is seen by the next job or tick.
        let other = store::open_connection(&path).unwrap();
        store::insert_share(&other, &share("5", "a", "p3")).unwrap();
        drop(other);
        st.call(|_| Ok(())).await.unwrap();
        assert!(st.index().get_share("5").is_some());
        compare(&st).await;
        st.close().await;
        // A restart loads what is there.
        let st = Store::open(&path).await.unwrap();
        assert_eq!(st.index().counts(), (3, 3));
        compare(&st).await;
        st.close().await;
    });
}

/// A write re-reads the rows it changed (and, for a renamed share, its snapshots' rows),
/// however many rows the tables hold: its cost does not grow with the tables.
#[test]
fn a_sync_rereads_the_changed_rows_only() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("t.db")).await.unwrap();
        st.write(|c| {
            for i in 0..500 {
                let s = share(&format!("id{i}"), &format!("n{i}"), "p");
                store::insert_share(c, &s)?;
                store::insert_snapshot(c, &snap(&format!("sn{i}a"), "a", &s, 7))?;
                store::insert_snapshot(c, &snap(&format!("sn{i}b"), "b", &s, 7))?;
            }
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(st.index().counts(), (500, 1000));
        let reread = |before: u64| st.index().rows_reread() - before;
        let at = st.index().rows_reread();
        st.write(|c| store::set_share_size(c, "id7", 1024))
            .await
            .unwrap();
        assert_eq!(reread(at), 1, "a resize re-reads its share's row");
        let at = st.index().rows_reread();
        st.write(|c| store::set_snapshot_state(c, "sn9a", ShareState::Deleting))
            .await
            .unwrap();
        assert_eq!(reread(at), 1);
        let at = st.index().rows_reread();
        st.write(|c| {
            c.execute("UPDATE shares SET name = 'other' WHERE id = 'id3'", [])?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(
            reread(at),
            3,
            "a rename re-reads the share and its two snapshots"
        );
        let at = st.index().rows_reread();
        st.call(|c| store::list_shares(c, None, None, None))
            .await
            .unwrap();
        assert_eq!(reread(at), 0, "a read re-reads nothing");
        compare(&st).await;
        st.close().await;
    });
}
