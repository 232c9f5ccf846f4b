//! Crash injection for exports and attachments: shelfd (a debug build) aborts at every
//! failpoint of export.create, export.delete, share.delete with force, share.attach and
//! share.detach, over iSCSI (a real tgtd on private ports) and NFS (real exportfs with a
//! private exports file). After a restart the tree, tgtd and the exports file agree,
//! attached initiators can log in and detached ones cannot, and the operation retried
//! answers consistently.

mod agree;
#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use agree::*;
use ciborium::Value;
use common::*;
use shelf::client::{get, ClientError};
use shelf::engine::failpoint::{self, DriverStep};
use shelf::export::tgt::{parse_show_target, TgtTarget};
use shelf::model::{Export, Protocol};

const MIB: u64 = 1 << 20;
const KEEPER: &str = "iqn.2026-11.org.example:keeper";
const CLIENT: &str = "iqn.2026-11.org.example:client-a";
const KEEPER_IP: &str = "192.0.2.10";
const CLIENT_IP: &str = "192.0.2.20";
const STATIC_IP: &str = "192.0.2.30";

/// The operation walked, named by what the subject share looks like before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// export.create of an unexported share.
    ExportCreate,
    /// share.attach of an unexported share (creates the export first).
    AttachUnexported,
    /// export.delete with force of an exported, attached share.
    ExportDelete,
    /// share.delete with force of an exported, attached share.
    ShareDeleteForce,
    /// share.attach of an exported share.
    Attach,
    /// share.detach of an attached share.
    Detach,
}

/// Which failpoint of a step, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Before,
    After,
    Committed,
}

fn cases() -> Vec<(Op, DriverStep)> {
    vec![
        (Op::ExportCreate, failpoint::EXPORT_CREATE),
        (Op::AttachUnexported, failpoint::EXPORT_CREATE),
        (Op::ExportDelete, failpoint::EXPORT_DELETE),
        (Op::ShareDeleteForce, failpoint::SHARE_DELETE_EXPORT),
        (Op::Attach, failpoint::SHARE_ATTACH),
        (Op::Detach, failpoint::SHARE_DETACH),
    ]
}

/// The keeper share: exported and attached over both protocols; it must come through
/// every crash untouched.
fn prepare_keeper(d: &Daemon) {
    d.ok(
        "share.create",
        vec![
            ("name", t("keeper")),
            ("size", n(4 * MIB)),
            ("multiattach", Value::Bool(true)),
        ],
    );
    d.ok(
        "export.create",
        vec![
            ("share", t("keeper")),
            ("protocol", t("nfs")),
            ("clients", texts(&["192.0.2.1"])),
        ],
    );
    for p in ["iscsi", "nfs"] {
        d.ok(
            "share.attach",
            vec![
                ("share", t("keeper")),
                ("protocol", t(p)),
                ("connector", connector(KEEPER, KEEPER_IP, "keeper-host")),
            ],
        );
    }
}

/// The keeper's exports-file line and tgt target, as the drivers hold them.
/// (Reads no daemon state: shelfd may be down.)
fn keeper_state(r: &Rig, keeper_id: &str) -> (Vec<(String, BTreeSet<String>)>, Vec<TgtTarget>) {
    let lines = file_lines(&r.ef.path)
        .into_iter()
        .filter(|(p, _)| p.contains(keeper_id))
        .collect::<Vec<_>>();
    assert_eq!(lines.len(), 1, "keeper's line: {lines:?}");
    let targets = parse_show_target(&r.tgtd.show())
        .into_iter()
        .filter(|t| t.iqn == format!("{PREFIX}:keeper"))
        .collect::<Vec<_>>();
    assert_eq!(targets.len(), 1, "keeper's target: {targets:?}");
    (lines, targets)
}

fn attach_args(p: Protocol) -> Vec<(&'static str, Value)> {
    vec![
        ("share", t("subject")),
        ("protocol", t(proto_name(p))),
        ("connector", connector(CLIENT, CLIENT_IP, "host-a")),
    ]
}

/// The subject share as the operation expects it; returns the client's login if attached.
fn prepare_subject(d: &Daemon, op: Op, p: Protocol) -> Option<Login> {
    d.ok(
        "share.create",
        vec![("name", t("subject")), ("size", n(4 * MIB))],
    );
    if matches!(op, Op::ExportCreate | Op::AttachUnexported) {
        return None;
    }
    let mut args = vec![("share", t("subject")), ("protocol", t(proto_name(p)))];
    if p == Protocol::Nfs {
        args.push(("clients", texts(&[])));
    }
    d.ok("export.create", args);
    if op == Op::Attach {
        return None;
    }
    let r = d.ok("share.attach", attach_args(p));
    (p == Protocol::Iscsi).then(|| Login::from(&r, CLIENT))
}

/// The walked operation's request.
fn request(op: Op, p: Protocol) -> (&'static str, Vec<(&'static str, Value)>) {
    let share_proto = vec![("share", t("subject")), ("protocol", t(proto_name(p)))];
    match op {
        Op::ExportCreate => {
            let mut a = share_proto;
            if p == Protocol::Nfs {
                a.push(("clients", texts(&[STATIC_IP])));
            }
            ("export.create", a)
        }
        Op::AttachUnexported | Op::Attach => ("share.attach", attach_args(p)),
        Op::ExportDelete => {
            let mut a = share_proto;
            a.push(("force", Value::Bool(true)));
            ("export.delete", a)
        }
        Op::ShareDeleteForce => (
            "share.delete",
            vec![("share", t("subject")), ("force", Value::Bool(true))],
        ),
        Op::Detach => ("share.detach", attach_args(p)),
    }
}

/// The subject's export over `p` and whether CLIENT is attached to it.
fn subject_state(d: &Daemon, p: Protocol) -> (bool, Option<Export>, bool) {
    let share = share_names(d).contains(&"subject".to_string());
    let export = exports(d)
        .into_iter()
        .find(|e| e.share_name == "subject" && e.protocol == p);
    let client = match p {
        Protocol::Iscsi => CLIENT,
        Protocol::Nfs => CLIENT_IP,
        Protocol::Nvme => unreachable!("the crash matrix runs over iSCSI and NFS"),
    };
    let attached = attachments(d)
        .iter()
        .any(|a| a.share_name == "subject" && a.protocol == p && a.client == client);
    (share, export, attached)
}

/// What the tree must say after recovery: (share exists, export exists, client attached).
/// Unacknowledged creations are undone; unacknowledged removals are finished; a committed
/// step stays.
fn expected_after_recovery(op: Op, at: At) -> (bool, bool, bool) {
    let committed = at == At::Committed;
    match op {
        Op::ExportCreate => (true, committed, false),
        Op::AttachUnexported => (true, committed, false),
        Op::ExportDelete | Op::ShareDeleteForce => (true, false, false),
        Op::Attach => (true, true, committed),
        Op::Detach => (true, true, false),
    }
}

/// Retry the operation after recovery and check its answer and the result.
fn retry_and_check(d: &Daemon, op: Op, p: Protocol, at: At, ctx: &str) {
    let (name, args) = request(op, p);
    let r = d.call(name, args);
    let changed = |v: &Value| get(v, "changed").cloned();
    match op {
        Op::ExportCreate | Op::Attach => {
            let v = r.unwrap_or_else(|e| panic!("{ctx}: retry failed: {e}"));
            assert_eq!(
                changed(&v),
                Some(Value::Bool(at != At::Committed)),
                "{ctx}: {v:?}"
            );
        }
        Op::AttachUnexported => {
            let v = r.unwrap_or_else(|e| panic!("{ctx}: retry failed: {e}"));
            assert_eq!(changed(&v), Some(Value::Bool(true)), "{ctx}: {v:?}");
        }
        Op::ExportDelete => match r {
            Err(ClientError::Remote(e)) if e.code == "not_found" => {}
            other => panic!("{ctx}: a finished delete retried answered {other:?}"),
        },
        Op::ShareDeleteForce => {
            let v = r.unwrap_or_else(|e| panic!("{ctx}: retry failed: {e}"));
            assert_eq!(changed(&v), Some(Value::Bool(true)), "{ctx}: {v:?}");
        }
        Op::Detach => {
            let v = r.unwrap_or_else(|e| panic!("{ctx}: retry failed: {e}"));
            assert_eq!(changed(&v), Some(Value::Bool(false)), "{ctx}: {v:?}");
            assert_eq!(get(&v, "detached"), Some(&Value::Null), "{ctx}: {v:?}");
        }
    }
    let want = match op {
        Op::ExportCreate => (true, true, false),
        Op::AttachUnexported | Op::Attach => (true, true, true),
        Op::ExportDelete => (true, false, false),
        Op::ShareDeleteForce => (false, false, false),
        Op::Detach => (true, true, false),
    };
    let (share, export, attached) = subject_state(d, p);
    assert_eq!(
        (share, export.is_some(), attached),
        want,
        "{ctx}: after the retry"
    );
}

/// Walk every failpoint of every export and attachment operation over one protocol.
fn walk(p: Protocol) {
    let mut walked = BTreeSet::new();
    for (op, step) in cases() {
        for (at, fp) in [
            (At::Before, step.before),
            (At::After, step.after),
            (At::Committed, step.committed),
        ] {
            let t0 = Instant::now();
            let ctx = format!("{} {op:?} at {fp}", proto_name(p));
            crash_case(p, op, at, fp, &ctx);
            walked.insert(fp);
            eprintln!("{ctx}: ok in {:.1} s", t0.elapsed().as_secs_f64());
        }
    }
    let all: BTreeSet<&str> = failpoint::EXPORT_POINTS.iter().copied().collect();
    assert_eq!(walked, all, "every export failpoint walked");
}

/// One case: prepare, crash at `fp`, crash again right after recovery, restart, check,
/// retry, check.
fn crash_case(p: Protocol, op: Op, at: At, fp: &str, ctx: &str) {
    let mut r = Rig::new("crashx");
    prepare_keeper(&r.d);
    let login = prepare_subject(&r.d, op, p);
    check_agree(&r, &format!("{ctx} (before the crash)"));
    crash_twice(&mut r, op, p, fp, ctx);

    r.d.restart();
    check_agree(&r, ctx);
    let (share, export, attached) = subject_state(&r.d, p);
    assert_eq!(
        (share, export.is_some(), attached),
        expected_after_recovery(op, at),
        "{ctx}: after recovery"
    );
    if let (Some(login), Some(_)) = (&login, &export) {
        if !attached {
            assert!(
                login.inquiry().is_err(),
                "{ctx}: a detached initiator can still log in"
            );
        }
    }

    retry_and_check(&r.d, op, p, at, ctx);
    check_agree(&r, &format!("{ctx} (after the retry)"));
    if let (Some(login), Op::Detach) = (&login, op) {
        assert!(login.inquiry().is_err(), "{ctx}: detached but logs in");
    }
}

/// Crash at `fp` during the operation, then again right after start-up recovery (before
/// the drivers are reconciled): the keeper's committed exports must survive both.
fn crash_twice(r: &mut Rig, op: Op, p: Protocol, fp: &str, ctx: &str) {
    let keeper_id = exports(&r.d)
        .into_iter()
        .find(|e| e.share_name == "keeper")
        .unwrap()
        .share;
    let keeper = keeper_state(r, &keeper_id);
    r.d.stop();
    r.d.restart_with_env(&[("SHELF_FAILPOINT", fp)]);
    let (name, args) = request(op, p);
    let reply = r.d.call(name, args);
    assert!(
        reply.is_err(),
        "{ctx}: {name} answered {reply:?} instead of crashing"
    );
    assert!(!r.d.wait_exit().success(), "{ctx}: shelfd did not abort");
    assert!(
        r.d.log_text().contains(&format!("failpoint {fp} reached")),
        "{ctx}: shelfd died elsewhere"
    );
    let status =
        r.d.restart_until_exit(&[("SHELF_FAILPOINT", failpoint::RECOVER_DONE)]);
    assert!(
        !status.success(),
        "{ctx}: shelfd did not abort after recovery"
    );
    assert_eq!(
        keeper_state(r, &keeper_id),
        keeper,
        "{ctx}: keeper after recovery"
    );
}

#[test]
fn every_export_and_attach_failpoint_recovers_over_iscsi() {
    walk(Protocol::Iscsi);
}

#[test]
fn every_export_and_attach_failpoint_recovers_over_nfs() {
    walk(Protocol::Nfs);
}

/// Recovery removes an interrupted NFS export before the drivers are reconciled; a crash
/// right then must not have taken the committed exports out of the exports file (nfsd
/// reads it at boot) or out of the kernel's table.
#[test]
fn a_crash_right_after_recovery_keeps_committed_nfs_exports() {
    let mut r = Rig::new("crashr");
    prepare_keeper(&r.d);
    r.d.ok(
        "share.create",
        vec![("name", t("subject")), ("size", n(4 * MIB))],
    );
    check_agree(&r, "before");
    let keeper_lines = file_lines(&r.ef.path);
    assert_eq!(keeper_lines.len(), 1, "{keeper_lines:?}");

    r.d.stop();
    r.d.restart_with_env(&[("SHELF_FAILPOINT", failpoint::EXPORT_CREATE.after)]);
    let (name, args) = request(Op::ExportCreate, Protocol::Nfs);
    assert!(r.d.call(name, args).is_err());
    assert!(!r.d.wait_exit().success());
    assert_eq!(
        file_lines(&r.ef.path).len(),
        2,
        "the interrupted export was applied"
    );

    let status =
        r.d.restart_until_exit(&[("SHELF_FAILPOINT", failpoint::RECOVER_DONE)]);
    assert!(!status.success(), "shelfd did not abort after recovery");
    assert_eq!(
        file_lines(&r.ef.path),
        keeper_lines,
        "after recovery the exports file holds exactly the committed exports"
    );
    assert_eq!(live_nfs(&r.xfs.mount), keeper_lines, "exportfs -v");

    r.d.restart();
    check_agree(&r, "after restart");
}

/// A delete whose driver call failed leaves its export `deleting` (recovery finishes it at
/// the next start). An attach must not be acknowledged on it: recovery would delete the
/// export with the attachment.
#[test]
fn no_attach_is_acknowledged_on_an_export_left_deleting() {
    let mut r = Rig::new("crashd");
    r.d.ok(
        "share.create",
        vec![("name", t("subject")), ("size", n(4 * MIB))],
    );
    r.d.ok(
        "export.create",
        vec![("share", t("subject")), ("protocol", t("iscsi"))],
    );
    r.tgtd.stop();
    r.d.err(
        "export.delete",
        vec![("share", t("subject")), ("protocol", t("iscsi"))],
        "busy",
    );
    let left = exports(&r.d);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state.as_str(), "deleting");
    r.tgtd.restart();

    let m =
        r.d.err("share.attach", attach_args(Protocol::Iscsi), "busy");
    assert!(m.contains("deleting"), "{m}");
    let (name, mut args) = request(Op::ExportCreate, Protocol::Iscsi);
    args.push(("clients", texts(&[CLIENT])));
    r.d.err(name, args, "busy");

    // Deleting again finishes the job; then attach works and survives a restart.
    r.d.ok(
        "export.delete",
        vec![("share", t("subject")), ("protocol", t("iscsi"))],
    );
    let a = r.d.ok("share.attach", attach_args(Protocol::Iscsi));
    assert_eq!(sub(&a, "changed"), &Value::Bool(true));
    r.d.stop();
    r.d.restart();
    check_agree(&r, "after restart");
    let (share, export, attached) = subject_state(&r.d, Protocol::Iscsi);
    assert_eq!(
        (share, export.is_some(), attached),
        (true, true, true),
        "the acknowledged attach survived"
    );
}
