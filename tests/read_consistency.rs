//! Reads come from the store's in-memory index (docs/performance.md, "Reads from the
//! in-memory index"): a read that follows an acknowledged write, on any connection, sees
//! it; the index answers exactly what the SQL queries answer (the same reply bytes);
//! restarts and an offline `recover --rebuild-db` load it from the database. Against the
//! real shelfd on a real XFS.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ciborium::Value;
use common::*;
use shelf::client::{args, get_text, get_u64, Client, ClientError};
use shelf::proto::Answer;

const MIB: u64 = 1 << 20;
const WRITERS: usize = 8;
const ROUNDS: usize = 12;

fn call(c: &mut Client, op: &str, a: Vec<(&str, Value)>) -> Value {
    c.call(op, args(a))
        .unwrap_or_else(|e| panic!("{op} failed: {e}"))
}

/// The error code of a call that must fail.
fn code(c: &mut Client, op: &str, a: Vec<(&str, Value)>) -> String {
    match c.call(op, args(a)) {
        Err(ClientError::Remote(e)) => e.code,
        other => panic!("{op}: expected an error, got {other:?}"),
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
}

fn ids(v: &Value) -> Vec<String> {
    items(v)
        .iter()
        .map(|x| get_text(x, "id").expect("id").to_string())
        .collect()
}

/// Whether `tree` shows a share with this id anywhere (roots or clones).
fn tree_has(v: &Value, id: &str) -> bool {
    items(v).iter().any(|node| {
        get_text(node, "id") == Some(id)
            || node
                .as_map()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_text() == Some("snapshots"))
                .flat_map(|(_, s)| items(s))
                .filter_map(|s| s.as_map())
                .flatten()
                .filter(|(k, _)| k.as_text() == Some("clones"))
                .any(|(_, c)| tree_has(c, id))
    })
}

/// One writer: its own shares, every change acknowledged on `w` and then read on `r`,
/// another connection, which must see it.
fn write_and_check(socket: &Path, me: usize) {
    let mut w = Client::connect(socket).expect("connect");
    let mut r = Client::connect(socket).expect("connect");
    for round in 0..ROUNDS {
        let name = format!("w{me}-r{round}");
        let created = call(
            &mut w,
            "share.create",
            vec![("name", t(&name)), ("size", n(MIB))],
        );
        let id = field(sub(&created, "share"), "id");
        let shown = call(&mut r, "share.show", vec![("share", t(&name))]);
        assert_eq!(
            get_text(&shown, "id"),
            Some(id.as_str()),
            "{name}: show after create"
        );
        let listed = call(&mut r, "share.list", vec![("name", t(&name))]);
        assert_eq!(
            ids(&listed),
            std::slice::from_ref(&id),
            "{name}: list after create"
        );
        assert!(
            tree_has(&call(&mut r, "tree", vec![]), &id),
            "{name}: tree after create"
        );

        let value = format!("v{round}");
        call(
            &mut w,
            "share.set_metadata",
            vec![
                ("share", t(&id)),
                ("metadata", Value::Map(vec![(t("round"), t(&value))])),
            ],
        );
        let shown = call(&mut r, "share.show", vec![("share", t(&id))]);
        let got = sub(&shown, "metadata");
        assert_eq!(
            get_text(got, "round"),
            Some(value.as_str()),
            "{name}: metadata"
        );

        call(
            &mut w,
            "share.resize",
            vec![("share", t(&id)), ("size", n(2 * MIB))],
        );
        let shown = call(&mut r, "share.show", vec![("share", t(&name))]);
        assert_eq!(
            get_u64(&shown, "size"),
            Some(2 * MIB),
            "{name}: size after resize"
        );

        let snap = call(
            &mut w,
            "snapshot.create",
            vec![("share", t(&id)), ("name", t("s"))],
        );
        let sid = field(sub(&snap, "snapshot"), "id");
        let listed = call(&mut r, "snapshot.list", vec![("share", t(&name))]);
        assert_eq!(
            ids(&listed),
            std::slice::from_ref(&sid),
            "{name}: snapshot.list after create"
        );
        let shown = call(&mut r, "snapshot.show", vec![("snapshot", t(&sid))]);
        assert_eq!(get_text(&shown, "share_name"), Some(name.as_str()));
        let shown = call(
            &mut r,
            "snapshot.show",
            vec![("snapshot", t("s")), ("share", t(&name))],
        );
        assert_eq!(get_text(&shown, "id"), Some(sid.as_str()));

        // Every other round keeps its share and snapshot, for the restart below.
        if round % 2 == 0 {
            continue;
        }
        call(&mut w, "snapshot.delete", vec![("snapshot", t(&sid))]);
        assert_eq!(
            code(&mut r, "snapshot.show", vec![("snapshot", t(&sid))]),
            "not_found"
        );
        let listed = call(&mut r, "snapshot.list", vec![("share", t(&id))]);
        assert!(
            ids(&listed).is_empty(),
            "{name}: snapshot.list after delete"
        );

        call(&mut w, "share.delete", vec![("share", t(&id))]);
        assert_eq!(
            code(&mut r, "share.show", vec![("share", t(&name))]),
            "not_found"
        );
        assert!(ids(&call(&mut r, "share.list", vec![("name", t(&name))])).is_empty());
        assert!(
            !tree_has(&call(&mut r, "tree", vec![]), &id),
            "{name}: tree after delete"
        );
    }
}

/// Everything the reads answer, as values.
fn every_read(c: &mut Client) -> Vec<Value> {
    let mut out = vec![
        call(c, "share.list", vec![]),
        call(c, "snapshot.list", vec![]),
        call(c, "tree", vec![]),
    ];
    let shares = call(c, "share.list", vec![]);
    for id in ids(&shares) {
        let mut shown = call(c, "share.show", vec![("share", t(&id))]);
        // The volume's allocation is the file's, not the database's: leave it out.
        if let Value::Map(m) = &mut shown {
            m.retain(|(k, _)| k.as_text() != Some("allocated"));
        }
        out.push(shown);
        out.push(call(c, "snapshot.list", vec![("share", t(&id))]));
    }
    for sid in ids(&call(c, "snapshot.list", vec![])) {
        out.push(call(c, "snapshot.show", vec![("snapshot", t(&sid))]));
    }
    out
}

#[test]
fn a_read_after_an_acknowledged_write_on_another_connection_sees_it() {
    let xfs = Xfs::new("readcons", 1 << 30);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let mut d = Daemon::start(&layout);
    // Readers that list all the time, so the writers' syncs race with reads.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (socket, stop) = (layout.socket.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).expect("connect");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let op = ["share.list", "snapshot.list", "tree"][(n as usize + i) % 3];
                    call(&mut c, op, vec![]);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|me| {
            let socket = layout.socket.clone();
            std::thread::spawn(move || write_and_check(&socket, me))
        })
        .collect();
    for w in writers {
        w.join()
            .expect("a writer's read did not see its acknowledged write");
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    let mut c = d.client();
    let shares = call(&mut c, "share.list", vec![]);
    assert_eq!(ids(&shares).len(), WRITERS * ROUNDS / 2, "the kept shares");
    let before = every_read(&mut c);
    drop(c);

    // A restart loads the index from the database.
    d.stop();
    d.restart();
    assert_eq!(every_read(&mut d.client()), before, "after a restart");

    // So does a start after an offline rebuild of the database from the volumes.
    d.lose_db(None);
    d.rebuild(&[]);
    d.restart();
    let mut c = d.client();
    let rebuilt = call(&mut c, "share.list", vec![]);
    let key = |v: &Value| -> Vec<(String, String, u64)> {
        let mut k: Vec<_> = items(v)
            .iter()
            .map(|x| {
                (
                    get_text(x, "id").unwrap().to_string(),
                    get_text(x, "name").unwrap().to_string(),
                    get_u64(x, "size").unwrap(),
                )
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(key(&rebuilt), key(&shares), "shares after rebuild-db");
    let snaps = call(&mut c, "snapshot.list", vec![]);
    assert_eq!(
        ids(&snaps).len(),
        WRITERS * ROUNDS / 2,
        "snapshots after rebuild-db"
    );
    for id in ids(&rebuilt) {
        call(&mut c, "share.show", vec![("share", t(&id))]);
    }
    // And the index keeps up with writes after the rebuild, too.
    let first = ids(&snaps)[0].clone();
    call(&mut c, "snapshot.delete", vec![("snapshot", t(&first))]);
    assert_eq!(
        code(
            &mut d.client(),
            "snapshot.show",
            vec![("snapshot", t(&first))]
        ),
        "not_found"
    );
}

/// The reads' replies from the index are the bytes the SQL queries' results encode to
/// (`Answer::read` of the same functions the daemon used before the index), for a
/// database with several pools, clones, metadata and same-second snapshots.
#[test]
fn replies_from_the_index_are_the_replies_of_the_sql_queries() {
    let xfs = Xfs::new("readsql", 1 << 30);
    let second = xfs.mount.join("second");
    let layout = Layout::on_xfs(
        &xfs,
        &format!(
            "reconcile_interval = 0\n[pools.second]\npath = {:?}\n",
            second.display().to_string()
        ),
    );
    let d = Daemon::start(&layout);
    let mut c = d.client();
    for pool in ["default", "second"] {
        for i in 0..30 {
            // The same names in both pools; metadata on some.
            let name = format!("s{:02}", (i * 7) % 30);
            let mut a = vec![("name", t(&name)), ("size", n(MIB)), ("pool", t(pool))];
            if i % 3 == 0 {
                a.push(("metadata", Value::Map(vec![(t("k"), t(&format!("{i}")))])));
            }
            call(&mut c, "share.create", a);
            // Several snapshots of a share within one second: their order is the rows'.
            for k in 0..(i % 4) {
                call(
                    &mut c,
                    "snapshot.create",
                    vec![
                        ("share", t(&name)),
                        ("pool", t(pool)),
                        ("name", t(&format!("z{k}"))),
                    ],
                );
            }
            if i % 5 == 4 && i % 4 != 0 {
                call(
                    &mut c,
                    "share.clone",
                    vec![
                        ("share", t(&name)),
                        ("pool", t(pool)),
                        ("snapshot", t("z0")),
                        ("name", t(&format!("c{i}"))),
                    ],
                );
            }
        }
    }
    let db = shelf::store::open_connection(&layout.state.join("shelf.db")).expect("db");
    let sql = |v: Result<Value, String>| v;
    let enc = |a: Result<Answer, shelf::proto::EncodeError>| {
        a.map(|a| a.into_body().into_value())
            .map_err(|e| e.to_string())
    };
    let bytes = |v: &Value| {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    };
    let mut compared = 0;
    let mut check = |what: &str, daemon: Value, expected: Result<Value, String>| {
        let expected = sql(expected).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(bytes(&daemon), bytes(&expected), "{what}");
        compared += 1;
    };
    use shelf::store;
    for pool in [None, Some("default"), Some("second"), Some("none")] {
        let mut a = vec![];
        if let Some(p) = pool {
            a.push(("pool", t(p)));
        }
        check(
            "share.list",
            call(&mut c, "share.list", a.clone()),
            enc(Answer::read(
                &store::list_shares(&db, pool, None, None).unwrap(),
            )),
        );
        check(
            "snapshot.list",
            call(&mut c, "snapshot.list", a.clone()),
            enc(Answer::read(
                &store::list_snapshots(&db, None, pool).unwrap(),
            )),
        );
        let shares = store::list_shares(&db, pool, None, None).unwrap();
        let snaps = store::list_snapshots(&db, None, pool).unwrap();
        check(
            "tree",
            call(&mut c, "tree", a.clone()),
            enc(Answer::read(&shelf::model::build_tree(&shares, &snaps))),
        );
    }
    for s in store::list_shares(&db, None, None, None).unwrap() {
        let by_name = vec![("share", t(&s.name)), ("pool", t(&s.pool))];
        check(
            "share.list by name",
            call(&mut c, "share.list", vec![("name", t(&s.name))]),
            enc(Answer::read(
                &store::list_shares(&db, None, Some(&s.name), None).unwrap(),
            )),
        );
        let mut shown = call(&mut c, "share.show", by_name.clone());
        // share.show adds the volume's place and allocation after the row's fields.
        if let Value::Map(m) = &mut shown {
            m.retain(|(k, _)| !matches!(k.as_text(), Some("device" | "allocated")));
        }
        check(
            "share.show",
            shown,
            enc(Answer::read(
                &store::find_share(&db, &s.name, Some(&s.pool)).unwrap(),
            )),
        );
        check(
            "snapshot.list of a share",
            call(&mut c, "snapshot.list", by_name.clone()),
            enc(Answer::read(
                &store::list_snapshots(&db, Some(&s.id), None).unwrap(),
            )),
        );
        for n in store::list_snapshots(&db, Some(&s.id), None).unwrap() {
            let mut a = by_name.clone();
            a[0] = ("share", t(&s.id));
            a.push(("snapshot", t(&n.name)));
            check(
                "snapshot.show",
                call(&mut c, "snapshot.show", a),
                enc(Answer::read(
                    &store::find_snapshot(&db, &n.name, Some(&s.id), None).unwrap(),
                )),
            );
        }
    }
    // A name in both pools without a pool is refused with the same message.
    let msg = d.err("share.show", vec![("share", t("s00"))], "invalid_argument");
    assert_eq!(
        msg,
        store::find_share(&db, "s00", None).unwrap_err().to_string()
    );
    assert!(compared > 100, "{compared} replies compared");
}
