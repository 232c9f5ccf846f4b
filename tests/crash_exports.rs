//! Crash injection for exports and attachments: shelfd (a debug build) aborts at every
//! failpoint of export.create, export.delete, share.delete with force, share.attach and
//! share.detach, over iSCSI (a real tgtd on private ports) and NFS (real exportfs with a
//! private exports file). After a restart the tree, tgtd and the exports file agree,
//! attached initiators can log in and detached ones cannot, and the operation retried
//! answers consistently.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use ciborium::Value;
use common::*;
use shelf::client::{get, ClientError};
use shelf::engine::failpoint::{self, DriverStep};
use shelf::export::tgt::{parse_show_accounts, parse_show_target, TgtTarget};
use shelf::model::{Attachment, Export, Protocol};

const MIB: u64 = 1 << 20;
const PREFIX: &str = "iqn.2026-11.org.example.shelf";
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

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Iscsi => "iscsi",
        Protocol::Nfs => "nfs",
    }
}

fn connector(initiator: &str, ip: &str, host: &str) -> Value {
    Value::Map(vec![
        (t("host"), t(host)),
        (t("ip"), t(ip)),
        (t("initiator"), t(initiator)),
    ])
}

fn texts(list: &[&str]) -> Value {
    Value::Array(list.iter().map(|c| t(c)).collect())
}

/// Fields drop in order: the daemon, then tgtd, the exports file, the filesystem.
struct Rig {
    d: Daemon,
    tgtd: Tgtd,
    ef: ExportsFile,
    xfs: Xfs,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let xfs = Xfs::new(tag, 512 << 20);
        let tgtd = Tgtd::start();
        let ef = ExportsFile::new(tag);
        let layout = Layout::on_xfs(
            &xfs,
            &format!("reconcile_interval = 0\n{}{}", tgtd.config(), ef.config()),
        );
        let d = Daemon::start(&layout);
        Rig { d, tgtd, ef, xfs }
    }

    fn pool(&self) -> std::path::PathBuf {
        self.xfs.mount.join("pool")
    }
}

/// What an initiator needs to log in, from connection_info.
#[derive(Debug, Clone)]
struct Login {
    url: String,
    initiator: String,
}

impl Login {
    fn from(reply: &Value, initiator: &str) -> Login {
        let data = sub(sub(reply, "connection_info"), "data");
        Login {
            url: format!(
                "iscsi://{}%{}@{}/{}/1",
                field(data, "auth_username"),
                field(data, "auth_password"),
                field(data, "target_portal"),
                field(data, "target_iqn")
            ),
            initiator: initiator.to_string(),
        }
    }

    /// Log in and run INQUIRY on LUN 1.
    fn inquiry(&self) -> Result<(), String> {
        match try_run(&["iscsi-inq", "-i", &self.initiator, &self.url]) {
            (true, _, _) => Ok(()),
            (false, out, err) => Err(format!("{out}{err}")),
        }
    }
}

fn exports(d: &Daemon) -> Vec<Export> {
    d.ok("export.list", vec![]).deserialized().unwrap()
}

fn attachments(d: &Daemon) -> Vec<Attachment> {
    d.ok("attachment.list", vec![]).deserialized().unwrap()
}

fn share_names(d: &Daemon) -> Vec<String> {
    let list = d.ok("share.list", vec![]);
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(field(s, "state"), "available", "{s:?}");
            field(s, "name")
        })
        .collect()
}

/// Everyone an export lets in: its static clients and its attached ones.
fn allowed(e: &Export) -> BTreeSet<String> {
    e.options
        .clients
        .iter()
        .cloned()
        .chain(e.attached.iter().map(|a| a.client.clone()))
        .collect()
}

/// The exports file as path → clients.
fn file_lines(path: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let p = words.next().unwrap().to_string();
        let clients = words
            .map(|w| w.split('(').next().unwrap().to_string())
            .collect();
        assert!(out.insert(p, clients).is_none(), "duplicate line: {line}");
    }
    out
}

/// The kernel's export table (exportfs -v) for paths under `root`, as path → clients.
fn live_nfs(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, c, _) in exportfs_v() {
        if Path::new(&p).starts_with(root) {
            out.entry(p).or_default().insert(c);
        }
    }
    out
}

/// Rows, tgtd, the exports file and the kernel's table agree; attached initiators log in.
fn check_agree(r: &Rig, ctx: &str) {
    let d = &r.d;
    share_names(d);
    let rows = exports(d);
    for e in &rows {
        assert_eq!(
            e.state.as_str(),
            "available",
            "{ctx}: unsettled export {e:?}"
        );
    }

    // iSCSI: one shelf target per row, with its LUN, CHAP account and ACL; nothing else.
    let live = parse_show_target(&r.tgtd.show());
    let ours: Vec<_> = live
        .iter()
        .filter(|t| t.iqn.starts_with(&format!("{PREFIX}:")))
        .collect();
    let iscsi: Vec<&Export> = rows
        .iter()
        .filter(|e| e.protocol == Protocol::Iscsi)
        .collect();
    for t in &ours {
        assert!(
            iscsi.iter().any(|e| e.target == t.iqn),
            "{ctx}: target {} has no row",
            t.iqn
        );
    }
    assert_eq!(ours.len(), iscsi.len(), "{ctx}: targets {ours:?}");
    for e in &iscsi {
        let t = live
            .iter()
            .find(|t| t.iqn == e.target)
            .unwrap_or_else(|| panic!("{ctx}: no target for {e:?}"));
        assert_eq!(Some(t.tid), e.tid, "{ctx}: tid of {}", e.target);
        let vol = volume(&r.pool(), &e.share).display().to_string();
        assert_eq!(t.luns.get(&1), Some(&vol), "{ctx}: LUN of {}", e.target);
        let account: BTreeSet<String> = e.chap_user.iter().cloned().collect();
        assert_eq!(t.accounts, account, "{ctx}: CHAP of {}", e.target);
        assert_eq!(t.acl, allowed(e), "{ctx}: ACL of {}", e.target);
    }
    let accounts = r
        .tgtd
        .tgtadm(&["--mode", "account", "--op", "show"])
        .unwrap();
    let shelf_accounts: BTreeSet<String> = parse_show_accounts(&accounts)
        .into_iter()
        .filter(|u| u.starts_with(shelf::export::tgt::CHAP_USER_PREFIX))
        .collect();
    let row_accounts: BTreeSet<String> = iscsi.iter().filter_map(|e| e.chap_user.clone()).collect();
    assert_eq!(shelf_accounts, row_accounts, "{ctx}: CHAP accounts");

    // NFS: one line per row that lets anyone in, with exactly those clients; the kernel's
    // table says the same.
    let mut want = BTreeMap::new();
    for e in rows.iter().filter(|e| e.protocol == Protocol::Nfs) {
        let clients = allowed(e);
        if !clients.is_empty() {
            want.insert(e.target.clone(), clients);
        }
    }
    assert_eq!(file_lines(&r.ef.path), want, "{ctx}: exports file");
    assert_eq!(live_nfs(&r.xfs.mount), want, "{ctx}: exportfs -v");

    // Attachments and the rows' attached lists are the same set.
    let atts = attachments(d);
    let from_rows: BTreeSet<(String, String, String)> = rows
        .iter()
        .flat_map(|e| {
            e.attached.iter().map(|a| {
                (
                    e.share.clone(),
                    proto_name(e.protocol).to_string(),
                    a.client.clone(),
                )
            })
        })
        .collect();
    let from_atts: BTreeSet<(String, String, String)> = atts
        .iter()
        .map(|a| {
            (
                a.share.clone(),
                proto_name(a.protocol).to_string(),
                a.client.clone(),
            )
        })
        .collect();
    assert_eq!(from_rows, from_atts, "{ctx}: attachments vs export rows");

    // Every attached initiator can log in with the CHAP account attach hands out (asked
    // again: the same connector answers the same, changing nothing).
    for a in atts.iter().filter(|a| a.protocol == Protocol::Iscsi) {
        let initiator = a.initiator.clone().unwrap();
        let again = d.ok(
            "share.attach",
            vec![
                ("share", t(&a.share)),
                ("protocol", t("iscsi")),
                (
                    "connector",
                    connector(&initiator, a.ip.as_deref().unwrap(), &a.host),
                ),
            ],
        );
        assert_eq!(sub(&again, "changed"), &Value::Bool(false), "{ctx}");
        Login::from(&again, &initiator)
            .inquiry()
            .unwrap_or_else(|e| panic!("{ctx}: {initiator} cannot log in: {e}"));
    }
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
            let mut r = Rig::new("crashx");
            prepare_keeper(&r.d);
            let login = prepare_subject(&r.d, op, p);
            check_agree(&r, &format!("{ctx} (before the crash)"));
            let keeper_id = exports(&r.d)
                .into_iter()
                .find(|e| e.share_name == "keeper")
                .unwrap()
                .share;
            let keeper = keeper_state(&r, &keeper_id);

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

            // A second crash, right after recovery and before the drivers are reconciled,
            // must not lose the keeper's committed exports either.
            let status =
                r.d.restart_until_exit(&[("SHELF_FAILPOINT", failpoint::RECOVER_DONE)]);
            assert!(
                !status.success(),
                "{ctx}: shelfd did not abort after recovery"
            );
            assert_eq!(
                keeper_state(&r, &keeper_id),
                keeper,
                "{ctx}: keeper after recovery"
            );

            r.d.restart();
            check_agree(&r, &ctx);
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

            retry_and_check(&r.d, op, p, at, &ctx);
            check_agree(&r, &format!("{ctx} (after the retry)"));
            if let (Some(login), Op::Detach) = (&login, op) {
                assert!(login.inquiry().is_err(), "{ctx}: detached but logs in");
            }
            walked.insert(fp);
            eprintln!("{ctx}: ok in {:.1} s", t0.elapsed().as_secs_f64());
        }
    }
    let all: BTreeSet<&str> = failpoint::EXPORT_POINTS.iter().copied().collect();
    assert_eq!(walked, all, "every export failpoint walked");
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
