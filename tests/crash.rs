//! Crash injection: shelfd (a debug build) aborts at every named step of every multi-step
//! file-pool operation; after a restart, database and pool agree, nothing is orphaned and
//! data written before the crash is intact.

mod common;

use ciborium::Value;
use common::*;

const MIB: u64 = 1 << 20;

fn op_for(fp: &str) -> (&'static str, Vec<(&'static str, Value)>) {
    match fp.rsplit_once('.').unwrap().0 {
        "share.create" => (
            "share.create",
            vec![("name", t("new")), ("size", n(4 * MIB))],
        ),
        "share.delete" => ("share.delete", vec![("share", t("victim"))]),
        "share.resize" => (
            "share.resize",
            vec![("share", t("base")), ("size", n(16 * MIB))],
        ),
        "share.set_metadata" => (
            "share.set_metadata",
            vec![
                ("share", t("base")),
                ("metadata", Value::Map(vec![(t("k"), t("v"))])),
            ],
        ),
        "share.clone" => (
            "share.clone",
            vec![
                ("snapshot", t("s0")),
                ("share", t("base")),
                ("name", t("cl")),
            ],
        ),
        "snapshot.create" => (
            "snapshot.create",
            vec![("share", t("base")), ("name", t("s1"))],
        ),
        "snapshot.delete" => (
            "snapshot.delete",
            vec![("snapshot", t("s0")), ("share", t("base"))],
        ),
        other => panic!("no operation for failpoint family {other}"),
    }
}

/// Database and pool agree: every row settled, every row's file present, every file a row's.
fn check_consistent(d: &Daemon, pool: &std::path::Path) {
    let shares = d.ok("share.list", vec![]);
    let shares = shares.as_array().unwrap();
    let mut share_ids = Vec::new();
    for s in shares {
        assert_eq!(field(s, "state"), "available", "{s:?}");
        let id = field(s, "id");
        let vol = volume(pool, &id);
        let len = std::fs::metadata(&vol)
            .unwrap_or_else(|_| panic!("{vol:?} missing"))
            .len();
        assert_eq!(
            Some(len),
            shelf::client::get_u64(s, "size"),
            "file and row agree on size"
        );
        share_ids.push(id);
    }
    let on_disk: Vec<String> = std::fs::read_dir(pool.join("shares"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for id in &on_disk {
        assert!(share_ids.contains(id), "orphan share directory {id}");
    }
    let snaps = d.ok("snapshot.list", vec![]);
    let snap_ids: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(field(s, "state"), "available");
            field(s, "id")
        })
        .collect();
    let snap_files: Vec<String> = std::fs::read_dir(pool.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    for id in &snap_files {
        assert!(snap_ids.contains(id), "orphan snapshot file {id}");
    }
    for id in &snap_ids {
        assert!(snap_files.contains(id), "snapshot {id} has no file");
    }
}

#[test]
fn every_failpoint_of_every_file_pool_operation_recovers() {
    let data = pattern(5, MIB as usize);
    let mut tested = 0;
    for fp in shelf::engine::failpoint::ALL {
        let xfs = Xfs::new("crash", 512 << 20);
        let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
        let pool = xfs.mount.join("pool");
        let mut d = Daemon::start(&layout);
        let base = d.ok(
            "share.create",
            vec![("name", t("base")), ("size", n(8 * MIB))],
        );
        let base_id = field(sub(&base, "share"), "id");
        write_at(&volume(&pool, &base_id), 0, &data);
        d.ok(
            "snapshot.create",
            vec![("share", t("base")), ("name", t("s0"))],
        );
        d.ok(
            "share.create",
            vec![("name", t("victim")), ("size", n(MIB))],
        );
        d.stop();

        d.restart_with_env(&[("SHELF_FAILPOINT", fp)]);
        let (op, args) = op_for(fp);
        let r = d.call(op, args);
        assert!(r.is_err(), "{fp}: {op} answered {r:?} instead of crashing");
        let status = d.wait_exit();
        assert!(!status.success(), "{fp}: shelfd did not abort");

        d.restart();
        check_consistent(&d, &pool);
        assert_eq!(
            read_at(&volume(&pool, &base_id), 0, data.len()),
            data,
            "{fp}: data lost"
        );
        tested += 1;
        drop(d);
    }
    eprintln!("{tested} crash points tested");
}
