//! Issue 4's guarantees against a real shelfd: roles from SO_PEERCRED and the audit log,
//! idempotency keys, capacity guards, `verify`, and `shelfd recover --rebuild-db` bringing
//! back the whole tree, its exports and its attachments from the pools alone.

mod common;
mod peer;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use ciborium::Value;
use common::*;
use peer::{open_to_all, shelfctl_as, NOGROUP};
use shelf::client::{args, get, get_text, ClientError};

const MIB: u64 = 1 << 20;
const INIT: &str = "iqn.2026-11.org.example:integrity";

#[test]
fn roles_come_from_peer_credentials_and_every_change_is_audited() {
    let xfs = Xfs::new("roles", 512 * MIB);
    let layout = Layout::on_xfs(
        &xfs,
        &format!(
            "[access]\nsocket_group = \"{NOGROUP}\"\nreader_users = [\"4242\"]\nadmin_users = [\"4243\"]\n"
        ),
    );
    let d = Daemon::start(&layout);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), NOGROUP, "socket group");
    let db = d.state.join("shelf.db");
    assert_eq!(
        std::fs::metadata(&db).unwrap().mode() & 0o777,
        0o600,
        "database mode"
    );
    open_to_all(&[xfs.base(), d.socket.parent().unwrap()]);

    // A reader reads, and is refused changes.
    let (code, out, err) = shelfctl_as(4242, NOGROUP, &d.socket, &["share", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = shelfctl_as(4242, NOGROUP, &d.socket, &["share", "create", "r1", "4M"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("permission_denied") && err.contains("reader"),
        "{err}"
    );
    // An admin changes; someone with no role is refused even hello.
    let (code, out, err) = shelfctl_as(4243, NOGROUP, &d.socket, &["share", "create", "a1", "4M"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = shelfctl_as(4244, NOGROUP, &d.socket, &["hello"]);
    assert_eq!(code, 1);
    assert!(err.contains("permission_denied"), "{err}");
    // Someone outside the socket's group cannot even connect.
    let (code, _, err) = shelfctl_as(4245, 4245, &d.socket, &["hello"]);
    assert_ne!(code, 0, "{err}");
    // A reader may not read the audit log either.
    let (code, _, _) = shelfctl_as(4242, NOGROUP, &d.socket, &["audit"]);
    assert_eq!(code, 1);

    // Root (admin) reads the audit log: the refusals and the change, with peers and
    // outcomes; reads by the reader are not audited.
    let log = d.ok("audit.list", vec![("limit", n(50))]);
    let entries: Vec<(u64, String, String, String)> = match &log {
        Value::Array(a) => a
            .iter()
            .map(|e| {
                (
                    shelf::client::get_u64(e, "uid").unwrap(),
                    get_text(e, "op").unwrap().to_string(),
                    get_text(e, "outcome").unwrap().to_string(),
                    get_text(e, "target").unwrap().to_string(),
                )
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    assert!(
        entries.contains(&(
            4242,
            "share.create".into(),
            "permission_denied".into(),
            "r1".into()
        )),
        "{entries:?}"
    );
    assert!(
        entries.contains(&(4243, "share.create".into(), "ok".into(), "a1".into())),
        "{entries:?}"
    );
    assert!(
        // A peer with no role is refused at connect (docs/security.md section 3).
        entries.contains(&(
            4244,
            "connect".into(),
            "permission_denied".into(),
            String::new()
        )),
        "{entries:?}"
    );
    assert!(!entries.iter().any(|e| e.1 == "share.list"), "{entries:?}");
    // Following the log: entries after a sequence number come oldest first.
    let newest = match &log {
        Value::Array(a) => shelf::client::get_u64(&a[0], "seq").unwrap(),
        _ => unreachable!(),
    };
    d.ok(
        "share.create",
        vec![("name", t("a2")), ("size", n(4 * MIB))],
    );
    let after = d.ok("audit.list", vec![("since", n(newest))]);
    let Value::Array(after) = after else { panic!() };
    assert_eq!(after.len(), 1);
    assert_eq!(get_text(&after[0], "target"), Some("a2"));
    assert_eq!(shelf::client::get_u64(&after[0], "uid"), Some(0));
}

#[test]
fn chap_secrets_stay_out_of_the_audit_log_and_the_log() {
    let mut rig = Rig::start("secret", 512 * MIB, "", false);
    let d = &mut rig.d;
    d.ok(
        "share.create",
        vec![("name", t("s1")), ("size", n(8 * MIB))],
    );
    let r = d.ok(
        "share.attach",
        vec![
            ("share", t("s1")),
            ("connector", connector(INIT, "127.0.0.1", "client-a")),
            ("protocol", t("iscsi")),
        ],
    );
    let secret = field(sub(sub(&r, "connection_info"), "data"), "auth_password");
    assert!(secret.len() >= 12);
    let audit = format!("{:?}", d.ok("audit.list", vec![]));
    assert!(audit.contains("share.attach"), "{audit}");
    assert!(
        !audit.contains(&secret),
        "the audit log holds the CHAP secret"
    );
    d.stop();
    assert!(
        !d.log_text().contains(&secret),
        "the daemon log holds the CHAP secret"
    );
}

#[test]
fn an_idempotency_key_answers_a_retry_with_the_first_answer() {
    let xfs = Xfs::new("keys", 512 * MIB);
    let mut d = Daemon::start(&Layout::on_xfs(&xfs, ""));
    let create = args(vec![("name", t("k1")), ("size", n(4 * MIB))]);
    let first = d
        .client()
        .call_keyed("share.create", create.clone(), Some("req-1"))
        .unwrap();
    assert_eq!(get(&first, "changed"), Some(&Value::Bool(true)));
    let id = field(sub(&first, "share"), "id");
    // The share goes away; a retry with the same key must not make it again.
    d.ok("share.delete", vec![("share", t("k1"))]);
    let again = d
        .client()
        .call_keyed("share.create", create.clone(), Some("req-1"))
        .unwrap();
    assert_eq!(again, first, "a retry gets the first answer");
    d.err("share.show", vec![("share", t("k1"))], "not_found");
    // The same key for other arguments is refused.
    let other = args(vec![("name", t("k1")), ("size", n(8 * MIB))]);
    match d.client().call_keyed("share.create", other, Some("req-1")) {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, "invalid_argument", "{}", e.message),
        r => panic!("{r:?}"),
    }
    // Kept refusals are replayed too, and answers survive a restart.
    let bad = args(vec![("share", t("nope"))]);
    let e1 = d
        .client()
        .call_keyed("share.delete", bad.clone(), Some("req-2"))
        .unwrap_err();
    d.stop();
    d.restart();
    let again = d
        .client()
        .call_keyed("share.create", create, Some("req-1"))
        .unwrap();
    assert_eq!(field(sub(&again, "share"), "id"), id);
    let e2 = d
        .client()
        .call_keyed("share.delete", bad, Some("req-2"))
        .unwrap_err();
    assert_eq!(e1.to_string(), e2.to_string());
    // Without a key, the create happens again (the name-based rule).
    d.ok(
        "share.create",
        vec![("name", t("k1")), ("size", n(4 * MIB))],
    );
}

#[test]
fn capacity_guards_refuse_with_figures() {
    let xfs = Xfs::new("capacity", 512 * MIB);
    let pool = xfs.mount.join("pool");
    let layout = Layout::new(
        xfs.base(),
        &format!(
            "[pools.default]\npath = {:?}\nreserved_percentage = 20\nmax_over_subscription_ratio = 1.0\n",
            pool.display().to_string()
        ),
    );
    let d = Daemon::start(&layout);
    let info = d.ok("pool.show", vec![("name", t("default"))]);
    let size = shelf::client::get_u64(&info, "size").unwrap();
    let reserved = shelf::client::get_u64(&info, "reserved").unwrap();
    let limit = shelf::client::get_u64(&info, "provisioning_limit").unwrap();
    assert_eq!(reserved, size / 5);
    assert_eq!(limit, size - reserved);
    let half = (limit / 2) & !(MIB - 1);
    d.ok("share.create", vec![("name", t("c1")), ("size", n(half))]);
    d.ok("share.create", vec![("name", t("c2")), ("size", n(half))]);
    let rest = (limit - 2 * half) & !511;
    let msg = d.err(
        "share.create",
        vec![("name", t("c3")), ("size", n(rest + MIB))],
        "no_space",
    );
    assert!(
        msg.contains("provisioned") && msg.contains("over the limit"),
        "{msg}"
    );
    let msg = d.err(
        "share.resize",
        vec![("share", t("c1")), ("size", n(half + rest + MIB))],
        "no_space",
    );
    assert!(msg.contains("over the limit"), "{msg}");
    let info = d.ok("pool.show", vec![("name", t("default"))]);
    assert!(shelf::client::get_u64(&info, "available_to_provision").unwrap() < 2 * MIB);
    // Fill the filesystem below the reserve: new work stops, deletes still work.
    d.ok("share.delete", vec![("share", t("c2"))]);
    let filler = xfs.mount.join("filler");
    let free = shelf::client::get_u64(&info, "free").unwrap();
    sh(&[
        "fallocate",
        "-l",
        &(free - reserved + MIB).to_string(),
        filler.to_str().unwrap(),
    ]);
    let msg = d.err(
        "snapshot.create",
        vec![("share", t("c1")), ("name", t("s"))],
        "no_space",
    );
    assert!(msg.contains("reserved"), "{msg}");
    d.err(
        "share.create",
        vec![("name", t("c4")), ("size", n(MIB))],
        "no_space",
    );
    std::fs::remove_file(&filler).unwrap();
    // XFS frees the blocks of a removed file in the background.
    sh(&["sync"]);
    let freed = eventually(20, || {
        let i = d.ok("pool.show", vec![("name", t("default"))]);
        shelf::client::get_u64(&i, "free").unwrap() > reserved + 8 * MIB
    });
    assert!(freed, "the filler's space did not come back");
    d.ok(
        "snapshot.create",
        vec![("share", t("c1")), ("name", t("s"))],
    );
    // A preallocated share must fit in the free space above the reserve.
    let msg = d.err(
        "share.create",
        vec![
            ("name", t("thick")),
            ("size", n(size)),
            ("sparse", Value::Bool(false)),
        ],
        "no_space",
    );
    assert!(msg.contains("free"), "{msg}");
}

#[test]
fn verify_lists_every_difference_and_repairs_nothing() {
    let rig = Rig::start("verify", 512 * MIB, "", false);
    let Rig { d, tgtd, xfs, .. } = &rig;
    let pool = xfs.mount.join("pool");
    let a = field(
        sub(
            &d.ok("share.create", vec![("name", t("a")), ("size", n(4 * MIB))]),
            "share",
        ),
        "id",
    );
    let b = field(
        sub(
            &d.ok("share.create", vec![("name", t("b")), ("size", n(4 * MIB))]),
            "share",
        ),
        "id",
    );
    let s = field(
        sub(
            &d.ok(
                "snapshot.create",
                vec![("share", t("a")), ("name", t("s1"))],
            ),
            "snapshot",
        ),
        "id",
    );
    d.ok(
        "export.create",
        vec![("share", t("b")), ("protocol", t("iscsi"))],
    );
    let clean = d.ok("verify", vec![]);
    assert_eq!(get(&clean, "clean"), Some(&Value::Bool(true)), "{clean:?}");

    // Tamper: an orphan volume, a snapshot gone, a volume resized behind shelfd's back,
    // a target deleted in tgtd.
    let orphan = "0b0e7c2e-0000-4000-8000-000000000001";
    std::fs::create_dir_all(pool.join("shares").join(orphan)).unwrap();
    std::fs::write(pool.join("shares").join(orphan).join("volume"), b"x").unwrap();
    std::fs::remove_file(pool.join("snapshots").join(&s)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(volume(&pool, &a))
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let out = tgtd.show();
    let tid = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Target ")
                .and_then(|r| r.split(':').next())
                .map(str::to_string)
        })
        .unwrap();
    tgtd.tgtadm(&[
        "--mode", "target", "--op", "delete", "--force", "--tid", &tid,
    ])
    .unwrap();

    let r = d.ok("verify", vec![]);
    assert_eq!(get(&r, "clean"), Some(&Value::Bool(false)));
    let found: Vec<(String, String)> = match get(&r, "differences") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| (field(x, "kind"), field(x, "object")))
            .collect(),
        other => panic!("{other:?}"),
    };
    assert!(
        found.contains(&("orphan".into(), orphan.into())),
        "{found:?}"
    );
    assert!(found.contains(&("missing".into(), s.clone())), "{found:?}");
    assert!(found.contains(&("drifted".into(), a.clone())), "{found:?}");
    assert!(
        found
            .iter()
            .any(|(k, o)| k == "missing" && o.ends_with(":b")),
        "{found:?}"
    );
    assert!(!found.iter().any(|(_, o)| o == &b), "{found:?}");
    // Nothing was repaired.
    assert!(pool.join("shares").join(orphan).exists());
    assert!(
        !tgtd
            .show()
            .lines()
            .any(|l| l.starts_with("Target ") && l.ends_with(":b")),
        "verify re-created a target"
    );
    // shelfctl verify exits 1 and prints the table.
    let out = Command::new(env!("CARGO_BIN_EXE_shelfctl"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(orphan));
}

/// Every share's row, as the test compares them across a rebuild.
fn shares_of(d: &Daemon) -> Vec<Value> {
    match d.ok("share.list", vec![]) {
        Value::Array(a) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rebuild_db_brings_back_the_tree_exports_and_attachments_from_the_pools() {
    let mut rig = Rig::start("rebuild", 1 << 30, "", true);
    let d = &mut rig.d;
    let meta = Value::Map(vec![(t("ganeti.instance"), t("web1")), (t("disk"), t("0"))]);
    d.ok(
        "share.create",
        vec![
            ("name", t("base")),
            ("size", n(16 * MIB)),
            ("metadata", meta),
        ],
    );
    d.ok(
        "share.create",
        vec![
            ("name", t("thick")),
            ("size", n(4 * MIB)),
            ("sparse", Value::Bool(false)),
        ],
    );
    d.ok(
        "snapshot.create",
        vec![("share", t("base")), ("name", t("gold"))],
    );
    d.ok(
        "share.clone",
        vec![
            ("snapshot", t("gold")),
            ("share", t("base")),
            ("name", t("vm1")),
        ],
    );
    d.ok(
        "snapshot.create",
        vec![("share", t("vm1")), ("name", t("daily"))],
    );
    d.ok(
        "share.resize",
        vec![("share", t("vm1")), ("size", n(32 * MIB))],
    );
    let attach = d.ok(
        "share.attach",
        vec![
            ("share", t("vm1")),
            ("connector", connector(INIT, "127.0.0.1", "client-a")),
            ("protocol", t("iscsi")),
        ],
    );
    d.ok(
        "export.create",
        vec![
            ("share", t("base")),
            ("protocol", t("nfs")),
            ("clients", Value::Array(vec![t("127.0.0.1")])),
        ],
    );
    let before_shares = shares_of(d);
    let before_tree = d.ok("tree", vec![]);
    let before_exports = d.ok("export.list", vec![]);
    let before_attach = d.ok("attachment.list", vec![]);
    let before_snaps = d.ok("snapshot.list", vec![]);
    d.stop();

    // Lose the database: garbage where it was.
    d.lose_db(Some(b"this is not a database"));
    let (ok, text) = d.try_rebuild(&[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("rebuilt: 3 share(s), 2 snapshot(s), 2 export(s), 1 attachment(s)"),
        "{text}"
    );
    assert!(text.contains("moved to"), "{text}");
    // A healthy database is not replaced without --force.
    assert!(!d.try_rebuild(&[]).0);

    d.restart();
    assert_eq!(shares_of(d), before_shares);
    assert_eq!(d.ok("tree", vec![]), before_tree);
    assert_eq!(d.ok("snapshot.list", vec![]), before_snaps);
    assert_eq!(d.ok("export.list", vec![]), before_exports);
    assert_eq!(d.ok("attachment.list", vec![]), before_attach);
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
    // The initiator still logs in with the secret it was given before the loss.
    let data = sub(sub(&attach, "connection_info"), "data");
    if let Err(e) = Login::from_reply(&attach, INIT).inquiry() {
        panic!("iscsi-inq after rebuild: {e}");
    }
    // Attach again is idempotent and gives the same secret.
    let again = d.ok(
        "share.attach",
        vec![
            ("share", t("vm1")),
            ("connector", connector(INIT, "127.0.0.1", "client-a")),
            ("protocol", t("iscsi")),
        ],
    );
    assert_eq!(get(&again, "changed"), Some(&Value::Bool(false)));
    assert_eq!(
        field(sub(sub(&again, "connection_info"), "data"), "auth_password"),
        field(data, "auth_password")
    );
}
