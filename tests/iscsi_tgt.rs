//! iSCSI exports through a real tgtd on a private port, read and written by real
//! initiators: libiscsi's tools and qemu's iscsi driver.

mod common;

use ciborium::Value;
use common::*;
use shelf::client::get_text;

const MIB: u64 = 1 << 20;
const INIT1: &str = "iqn.2026-11.org.example:client1";
const INIT2: &str = "iqn.2026-11.org.example:client2";

/// The rig without NFS: shelfd, a private tgtd, a 1 GiB scratch XFS.
type Setup = Rig;

fn setup(tag: &str) -> Setup {
    Rig::start(tag, 1 << 30, "", false)
}

#[test]
fn attach_write_snapshot_resize_and_detach_through_a_real_target() {
    let s = setup("iscsi");
    let d = &s.d;
    let pool = s.xfs.mount.join("pool");
    let created = d.ok(
        "share.create",
        vec![("name", t("vol1")), ("size", n(64 * MIB))],
    );
    let share_id = field(sub(&created, "share"), "id");

    let r = d.ok(
        "share.attach",
        vec![
            ("share", t("vol1")),
            ("connector", connector(INIT1, "127.0.0.1", "compute-1")),
        ],
    );
    let info = sub(&r, "connection_info");
    assert_eq!(field(info, "driver_volume_type"), "iscsi");
    let data = sub(info, "data");
    assert_eq!(
        field(data, "target_iqn"),
        "iqn.2026-11.org.example.shelf:vol1"
    );
    assert_eq!(
        field(data, "target_portal"),
        format!("127.0.0.1:{}", s.tgtd.port)
    );
    assert_eq!(sub(data, "target_lun"), &n(1));
    assert_eq!(sub(data, "target_discovered"), &Value::Bool(false));
    assert_eq!(field(data, "auth_method"), "CHAP");
    assert_eq!(field(data, "volume_id"), share_id);
    let login = Login::from(info, INIT1);
    assert!(login.user.starts_with("shelf-") && login.password.len() >= 12);

    // Idempotent: the same connector again gets the same answer and changes nothing.
    let again = d.ok(
        "share.attach",
        vec![
            ("share", t("vol1")),
            ("connector", connector(INIT1, "127.0.0.1", "compute-1")),
        ],
    );
    assert_eq!(sub(&again, "connection_info"), info);
    assert_eq!(sub(&again, "changed"), &Value::Bool(false));

    // A real initiator sees the LUN and its size.
    let listed = login.list().unwrap();
    assert!(
        listed.contains("iqn.2026-11.org.example.shelf:vol1"),
        "{listed}"
    );
    if let Err(e) = login.inquiry() {
        panic!("iscsi-inq: {e}");
    }
    assert_eq!(login.capacity().unwrap(), 64 * MIB);

    // Bytes written through iSCSI land in the volume file.
    login.write(MIB, 64 * 1024, 0xab).unwrap();
    let vol = volume(&pool, &share_id);
    assert_eq!(read_at(&vol, MIB, 64 * 1024), vec![0xab; 64 * 1024]);

    // A snapshot taken afterwards holds them; so does a clone of it.
    d.ok(
        "snapshot.create",
        vec![("share", t("vol1")), ("name", t("after-write"))],
    );
    login.write(MIB, 64 * 1024, 0xcd).unwrap();
    let c = d.ok(
        "share.clone",
        vec![
            ("snapshot", t("after-write")),
            ("share", t("vol1")),
            ("name", t("copy")),
        ],
    );
    let cvol = volume(&pool, &field(sub(&c, "share"), "id"));
    assert_eq!(read_at(&cvol, MIB, 64 * 1024), vec![0xab; 64 * 1024]);
    assert_eq!(read_at(&vol, MIB, 64 * 1024), vec![0xcd; 64 * 1024]);

    // A resize while attached is visible to the initiator.
    let r = d.ok(
        "share.resize",
        vec![("share", t("vol1")), ("size", n(128 * MIB))],
    );
    assert!(shelf::client::get(&r, "warnings").is_none(), "{r:?}");
    assert_eq!(login.capacity().unwrap(), 128 * MIB);
    login.write(100 * MIB, 4096, 0x11).unwrap();
    assert_eq!(read_at(&vol, 100 * MIB, 4096), vec![0x11; 4096]);

    // Single-attach: a second initiator is refused.
    let m = d.err(
        "share.attach",
        vec![
            ("share", t("vol1")),
            ("connector", connector(INIT2, "127.0.0.1", "compute-2")),
        ],
        "busy",
    );
    assert!(m.contains("compute-1"), "{m}");
    let wrong = Login {
        initiator: INIT2.into(),
        ..login.clone()
    };
    assert!(
        wrong.capacity().is_err(),
        "an initiator not in the ACL cannot log in"
    );
    let bad_chap = Login {
        password: "wrong-secret-000".into(),
        ..login.clone()
    };
    assert!(
        bad_chap.capacity().is_err(),
        "a wrong CHAP secret cannot log in"
    );

    let atts = d.ok("attachment.list", vec![]);
    assert_eq!(atts.as_array().unwrap().len(), 1);

    // Detach removes exactly that initiator.
    let show = s.tgtd.show();
    assert!(show.contains(INIT1), "{show}");
    let r = d.ok(
        "share.detach",
        vec![
            ("share", t("vol1")),
            ("connector", connector(INIT1, "127.0.0.1", "compute-1")),
        ],
    );
    assert_eq!(sub(&r, "changed"), &Value::Bool(true));
    let show = s.tgtd.show();
    assert!(!show.contains(INIT1), "initiator still in the ACL:\n{show}");
    assert!(
        login.capacity().is_err(),
        "a detached initiator cannot log in"
    );
    let r = d.ok(
        "share.detach",
        vec![
            ("share", t("vol1")),
            ("connector", connector(INIT1, "127.0.0.1", "compute-1")),
        ],
    );
    assert_eq!(
        sub(&r, "changed"),
        &Value::Bool(false),
        "detach is idempotent"
    );

    // Now the other host may attach.
    let r = d.ok(
        "share.attach",
        vec![
            ("share", t("vol1")),
            ("connector", connector(INIT2, "127.0.0.1", "compute-2")),
        ],
    );
    let login2 = Login::from(sub(&r, "connection_info"), INIT2);
    assert_eq!(login2.capacity().unwrap(), 128 * MIB);

    // A share with an export cannot be deleted without force; force removes the target.
    d.err(
        "share.delete",
        vec![("share", t("vol1")), ("recursive", Value::Bool(true))],
        "has_dependents",
    );
    d.ok(
        "share.delete",
        vec![
            ("share", t("vol1")),
            ("recursive", Value::Bool(true)),
            ("force", Value::Bool(true)),
        ],
    );
    let show = s.tgtd.show();
    assert!(!show.contains(":vol1"), "target left behind:\n{show}");
    assert!(!s
        .tgtd
        .tgtadm(&["--op", "show", "--mode", "account"])
        .unwrap()
        .contains(&login.user));
}

#[test]
fn a_restarted_tgtd_gets_every_target_back_through_reconcile() {
    let mut s = setup("tgtrestart");
    let mut logins = Vec::new();
    for (i, init) in [
        "iqn.2026-11.org.example:a",
        "iqn.2026-11.org.example:b",
        "iqn.2026-11.org.example:c",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("r{i}");
        s.d.ok(
            "share.create",
            vec![("name", t(&name)), ("size", n(16 * MIB))],
        );
        let r = s.d.ok(
            "share.attach",
            vec![
                ("share", t(&name)),
                ("connector", connector(init, "127.0.0.1", &format!("h{i}"))),
            ],
        );
        let login = Login::from(sub(&r, "connection_info"), init);
        login.write(0, 8192, 0x40 + i as u8).unwrap();
        logins.push(login);
    }
    // A static ACL entry and a no-CHAP export come back too.
    s.d.ok(
        "share.create",
        vec![("name", t("open")), ("size", n(8 * MIB))],
    );
    s.d.ok(
        "export.create",
        vec![
            ("share", t("open")),
            ("protocol", t("iscsi")),
            (
                "clients",
                Value::Array(vec![t("iqn.2026-11.org.example:static")]),
            ),
            ("chap", Value::Bool(false)),
        ],
    );
    let before = shelf::export::tgt::parse_show_target(&s.tgtd.show());
    assert_eq!(before.len(), 4);

    // Something not ours, and an orphan carrying our naming.
    s.tgtd.restart();
    assert!(s.tgtd.show().trim().is_empty(), "a fresh tgtd has nothing");
    s.tgtd
        .tgtadm(&[
            "--op",
            "new",
            "--mode",
            "target",
            "--tid",
            "90",
            "-T",
            "iqn.2020-01.com.other:foreign",
        ])
        .unwrap();
    s.tgtd
        .tgtadm(&[
            "--op",
            "new",
            "--mode",
            "target",
            "--tid",
            "91",
            "-T",
            "iqn.2026-11.org.example.shelf:stale",
        ])
        .unwrap();

    let report = s.d.ok("reconcile", vec![]);
    let findings = sub(&report, "findings").as_array().unwrap().clone();
    let kinds: Vec<(String, String)> = findings
        .iter()
        .map(|f| (field(f, "kind"), field(f, "object")))
        .collect();
    assert_eq!(
        kinds.iter().filter(|(k, _)| k == "missing").count(),
        4,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(
            "orphan".into(),
            "iqn.2026-11.org.example.shelf:stale".into()
        )),
        "{kinds:?}"
    );

    let after = shelf::export::tgt::parse_show_target(&s.tgtd.show());
    let ours: Vec<_> = after
        .iter()
        .filter(|t| t.iqn.starts_with("iqn.2026-11.org.example.shelf:"))
        .cloned()
        .collect();
    let mut ours_sorted = ours.clone();
    ours_sorted.sort_by_key(|t| t.tid);
    let mut before_sorted = before.clone();
    before_sorted.sort_by_key(|t| t.tid);
    assert_eq!(
        ours_sorted, before_sorted,
        "targets, LUNs, ACLs and CHAP accounts are as before"
    );
    assert!(
        after
            .iter()
            .any(|t| t.iqn == "iqn.2020-01.com.other:foreign"),
        "foreign target untouched"
    );

    // The data is intact and the same CHAP credentials still log in.
    for (i, login) in logins.iter().enumerate() {
        let data = login.read_all(s.xfs.base());
        assert_eq!(&data[..8192], &vec![0x40 + i as u8; 8192][..]);
    }
    // A second reconcile finds nothing more to do (apart from the foreign target, left alone).
    let report = s.d.ok("reconcile", vec![]);
    assert_eq!(
        sub(&report, "findings").as_array().unwrap().len(),
        0,
        "{report:?}"
    );
}

#[test]
fn shelfd_restart_brings_targets_back_after_tgtd_restart() {
    let mut s = setup("bootreplay");
    s.d.ok(
        "share.create",
        vec![("name", t("boot")), ("size", n(8 * MIB))],
    );
    let r = s.d.ok(
        "share.attach",
        vec![
            ("share", t("boot")),
            ("connector", connector(INIT1, "127.0.0.1", "h")),
        ],
    );
    let login = Login::from(sub(&r, "connection_info"), INIT1);
    s.d.stop();
    s.tgtd.restart();
    s.d.restart(); // start-up reconciles before the socket opens
    assert_eq!(login.capacity().unwrap(), 8 * MIB);
}

#[test]
fn a_missing_tgtd_is_a_clean_error_and_shelfd_keeps_running() {
    let xfs = Xfs::new("notgtd", 512 << 20);
    let layout = Layout::on_xfs(
        &xfs,
        &format!(
            "[iscsi]\ntgt_control_port = {}\nportal = \"127.0.0.1:3999\"\n",
            free_control_port() + 7000
        ),
    );
    let d = Daemon::start(&layout);
    d.ok("share.create", vec![("name", t("v")), ("size", n(MIB))]);
    let m = d.err(
        "export.create",
        vec![("share", t("v")), ("protocol", t("iscsi"))],
        "busy",
    );
    assert!(m.contains("tgtd is not running"), "{m}");
    let m = d.err(
        "share.attach",
        vec![
            ("share", t("v")),
            ("connector", connector(INIT1, "127.0.0.1", "h")),
        ],
        "busy",
    );
    assert!(m.contains("tgtd"), "{m}");
    let hello = d.ok("hello", vec![]);
    let drivers = sub(&hello, "drivers");
    assert!(get_text(drivers, "tgt").unwrap().contains("not running"));
    assert!(
        get_text(drivers, "lio").unwrap().contains("not available")
            || get_text(drivers, "lio").unwrap().contains("not installed")
    );
    assert_eq!(
        d.ok("export.list", vec![]),
        Value::Array(vec![]),
        "nothing half-made was kept"
    );
    d.ok("share.delete", vec![("share", t("v"))]);
}

#[test]
fn bad_connectors_and_options_are_refused() {
    let s = setup("iscsibad");
    let d = &s.d;
    d.ok("share.create", vec![("name", t("v")), ("size", n(MIB))]);
    for bad in [
        "not-an-iqn",
        "iqn.2026-11.Upper.Case",
        "iqn.2026-11.x;rm -rf",
        "",
    ] {
        d.err(
            "share.attach",
            vec![
                ("share", t("v")),
                ("connector", connector(bad, "127.0.0.1", "h")),
            ],
            "invalid_argument",
        );
    }
    let no_host = Value::Map(vec![(t("initiator"), t(INIT1))]);
    d.err(
        "share.attach",
        vec![("share", t("v")), ("connector", no_host)],
        "invalid_argument",
    );
    d.err(
        "export.create",
        vec![
            ("share", t("v")),
            ("protocol", t("iscsi")),
            ("clients", Value::Array(vec![t("10.0.0.1 ALL")])),
        ],
        "invalid_argument",
    );
    d.err(
        "export.create",
        vec![
            ("share", t("v")),
            ("protocol", t("iscsi")),
            ("driver", t("kernel")),
        ],
        "invalid_argument",
    );
    d.err(
        "export.create",
        vec![("share", t("v")), ("protocol", t("smb"))],
        "invalid_argument",
    );
    assert!(!s.tgtd.show().contains("Target"), "nothing was created");
}
