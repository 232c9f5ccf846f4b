//! Concurrency: 64 clients hammer one real shelfd (real SQLite, XFS, tgtd and exportfs)
//! with a random mix of mutations on a small shared name space, so the same objects are
//! raced for; afterwards the tree, the disk and the target daemons must agree, before and
//! after a restart (`mix.rs` sends, `invariants.rs` checks). The same run again while tgtd
//! is stopped now and then. And focused tests that a hung external command (a stopped
//! tgtd) or a stalled filesystem call (a frozen pool) blocks nobody working on other
//! objects, and that requests cut short that way leave nothing broken behind.
//!
//! `SHELF_CONC_SEED` replays a run's choices; `SHELF_CONC_SECS` changes its length
//! (default 25 s, 20 s for the run with stalls).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ciborium::Value;
use common::*;
use shelf::client::{args, ClientError};

const MIB: u64 = 1 << 20;
const CLIENTS: usize = 64;

#[path = "concurrency/invariants.rs"]
mod invariants;
#[path = "concurrency/mix.rs"]
mod mix;

use invariants::*;
use mix::*;

/// The rig: shelfd on a 2 GiB XFS with a private tgtd and exports file.
type Setup = Rig;

fn setup(tag: &str, extra: &str) -> Setup {
    Rig::start(tag, 2 << 30, extra, true)
}

#[test]
fn sixty_four_clients_racing_on_shared_names_leave_a_consistent_tree() {
    run_mix("conc", false);
}

/// The same, while tgtd is stopped for a few seconds now and then, so iSCSI requests time
/// out in every phase (create, attach, detach, delete, resize) and are rolled back; the
/// leftovers are what docs/exports.md promises: exports `deleting` until deleted again,
/// drift that one reconcile repairs.
#[test]
fn sixty_four_clients_with_tgtd_stalling_now_and_then_leave_a_consistent_tree() {
    run_mix("chaos", true);
}

/// Stops and continues tgtd until told to finish; continues it on drop, whatever happens.
/// Each stall is 0.5 to 4 s (around the 2 s command timeout), 0.5 to 2.5 s apart, so tgtd
/// stops in the middle of every kind of request.
fn stall_tgtd(tgtd: &Tgtd, done: &std::sync::atomic::AtomicBool, seed: u64) -> u32 {
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP};
    let resume = Resume(tgtd);
    let mut stalls = 0;
    let mut rng = Rng(seed);
    let nap = |ms: u64| {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until && !done.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        nap(500 + rng.below(2000));
        tgtd.signal(SIGSTOP);
        stalls += 1;
        nap(500 + rng.below(3500));
        tgtd.signal(SIGCONT);
    }
    drop(resume);
    stalls
}

fn run_mix(tag: &str, chaos: bool) {
    let seed = env_u64("SHELF_CONC_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let secs = env_u64("SHELF_CONC_SECS").unwrap_or(if chaos { 20 } else { 25 });
    eprintln!("{tag}: SHELF_CONC_SEED={seed} SHELF_CONC_SECS={secs}");
    let mut s = setup(tag, if chaos { "command_timeout = 2\n" } else { "" });
    let until = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let socket = s.d.socket.clone();
            std::thread::spawn(move || run_client(socket, seed, i, until, chaos))
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        let staller = chaos.then(|| scope.spawn(|| stall_tgtd(&s.tgtd, &done, seed)));
        for th in threads {
            tally.merge(th.join().expect("client thread"));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(st) = staller {
            eprintln!("tgtd was stopped {} time(s)", st.join().unwrap());
        }
    });
    let mut total = 0;
    for (op, ok) in &tally.ok {
        total += ok;
        eprintln!("{op:16} ok {ok:6}  errors {:?}", tally.errors.get(op));
    }
    for (op, e) in tally
        .errors
        .iter()
        .filter(|(op, _)| !tally.ok.contains_key(*op))
    {
        eprintln!("{op:16} ok      0  errors {e:?}");
    }
    eprintln!("{total} requests answered ok (seed {seed})");
    assert!(
        tally.bad.is_empty(),
        "seed {seed}: {} unclean outcome(s):\n{}",
        tally.bad.len(),
        tally.bad.join("\n")
    );
    if chaos || !tally.interference.is_empty() {
        // An export removal cut short leaves the export `deleting`, as documented; a
        // client retries the delete, and so does this test (only in these cases).
        eprintln!(
            "{} failure(s) caused by another program's exports file:\n{}",
            tally.interference.len(),
            tally.interference.join("\n")
        );
        for e in list(&s.d, "export.list") {
            if field(&e, "state") == "deleting" {
                eprintln!("retrying the delete of {}", field(&e, "id"));
                s.d.ok(
                    "export.delete",
                    vec![
                        ("export", t(&field(&e, "id"))),
                        ("force", Value::Bool(true)),
                    ],
                );
            }
        }
    }
    // Clones need a snapshot and a free name at once: too rare to demand in the slower
    // run with stalls.
    let clone = if chaos { "share.create" } else { "share.clone" };
    for op in [
        "share.create",
        "snapshot.create",
        clone,
        "export.create",
        "share.attach",
    ] {
        assert!(
            tally.ok.get(op).copied().unwrap_or(0) > 0,
            "no {op} ever succeeded"
        );
    }
    if chaos {
        // What tgtd did late (requests that timed out) is repaired once.
        let r = s.d.ok("reconcile", vec![]);
        eprintln!("reconcile after the stalls: {:?}", sub(&r, "findings"));
    }
    let before = check_invariants(&s);
    eprintln!(
        "settled: {} shares, {} snapshots, {} exports, {} attachments",
        before[0].len(),
        before[1].len(),
        before[2].len(),
        before[3].len()
    );
    // Start-up reconciliation must find nothing to repair either.
    let repairs = |d: &Daemon| d.log_text().matches("reconcile: ").count();
    let repaired_before = repairs(&s.d);
    s.d.stop();
    s.d.restart();
    assert_eq!(
        repairs(&s.d),
        repaired_before,
        "start-up reconcile repaired something"
    );
    let after = check_invariants(&s);
    assert_eq!(before, after, "a restart changed the tree");
}

/// Whether a request to the tgtd on this control port is pending (hung on a stopped
/// tgtd): a connection waiting on its management socket (shelfd's default transport), or
/// a tgtadm running (the fallback).
fn tgt_request_pending(control: u32) -> bool {
    socket_backlog(control) > 0 || tgtadm_running(control)
}

/// How many connections wait to be accepted on tgtd's management socket (`ss`'s Recv-Q
/// of a listening unix socket).
fn socket_backlog(control: u32) -> u64 {
    let path = format!("/var/run/tgtd/socket.{control}");
    let out = std::process::Command::new("ss")
        .args(["-xlH", "src", &path])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// Whether a tgtadm talking to this control port is running.
fn tgtadm_running(control: u32) -> bool {
    let port = control.to_string();
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        let argv = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let argv: Vec<&[u8]> = argv.split(|c| *c == 0).collect();
        argv.first().is_some_and(|a| a.ends_with(b"tgtadm"))
            && argv
                .windows(2)
                .any(|w| w[0] == b"-C" && w[1] == port.as_bytes())
    })
}

/// Sends SIGCONT to a stopped tgtd on drop, so a failing test never leaves it stopped
/// while the daemon's Drop waits for requests that need it.
struct Resume<'a>(&'a Tgtd);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.signal(nix::sys::signal::Signal::SIGCONT);
    }
}

/// A labelled request: label, operation, arguments.
type Call = (&'static str, &'static str, Vec<(&'static str, Value)>);

type Events = std::sync::Arc<std::sync::Mutex<Vec<(String, Result<Value, ClientError>)>>>;

/// Run one request on its own connection in a thread; its outcome is appended to `events`
/// when it completes, so the order of `events` is the order of completion.
fn spawn_call(
    d: &Daemon,
    events: &Events,
    label: &str,
    op: &'static str,
    a: Vec<(&'static str, Value)>,
) -> std::thread::JoinHandle<()> {
    let mut c = d.client();
    c.set_timeout(Some(HANG)).unwrap();
    let (events, label) = (events.clone(), label.to_string());
    std::thread::spawn(move || {
        let r = c.call(op, args(a));
        events.lock().unwrap().push((label, r));
    })
}

#[test]
fn a_hung_tgtd_request_blocks_nobody_working_on_other_objects() {
    // Long enough that the other requests finish well inside it even on a loaded machine.
    let s = setup("slow", "command_timeout = 5\n");
    let d = &s.d;
    for name in ["hung1", "hung2", "hung3", "hung4", "a", "b", "c", "e"] {
        d.ok(
            "share.create",
            vec![("name", t(name)), ("size", n(4 * MIB))],
        );
    }
    d.ok(
        "snapshot.create",
        vec![("share", t("a")), ("name", t("base"))],
    );
    for name in ["hung2", "hung3", "hung4"] {
        d.ok(
            "export.create",
            vec![("share", t(name)), ("protocol", t("iscsi"))],
        );
    }

    s.tgtd.signal(nix::sys::signal::Signal::SIGSTOP);
    let resume = Resume(&s.tgtd);
    let events: Events = Default::default();
    let mut hung = vec![spawn_call(
        d,
        &events,
        "hung export.create",
        "export.create",
        vec![("share", t("hung1")), ("protocol", t("iscsi"))],
    )];
    assert!(
        eventually(30, || tgt_request_pending(s.tgtd.control)),
        "export.create never asked tgtd"
    );
    // An attach holds its share's lock while it waits for tgtd.
    hung.push(spawn_call(
        d,
        &events,
        "hung share.attach",
        "share.attach",
        vec![
            ("share", t("hung2")),
            (
                "connector",
                Value::Map(vec![
                    (t("host"), t("h")),
                    (t("initiator"), t("iqn.2026-11.org.example:h")),
                ]),
            ),
        ],
    ));
    // Removing or refreshing a target while tgtd does not answer.
    hung.push(spawn_call(
        d,
        &events,
        "hung share.delete",
        "share.delete",
        vec![("share", t("hung3")), ("force", Value::Bool(true))],
    ));
    hung.push(spawn_call(
        d,
        &events,
        "hung share.resize",
        "share.resize",
        vec![("share", t("hung4")), ("size", n(8 * MIB))],
    ));
    // A reconcile (on request, or the periodic one) now queues for tgt behind the hung
    // requests. It must not hold up anyone else meanwhile. (The pause only gives it time to
    // queue; without it the check below could pass without testing anything.)
    hung.push(spawn_call(
        d,
        &events,
        "hung reconcile",
        "reconcile",
        vec![],
    ));
    std::thread::sleep(Duration::from_millis(500));
    let others: Vec<Call> = vec![
        (
            "share.create",
            "share.create",
            vec![("name", t("new")), ("size", n(4 * MIB))],
        ),
        (
            "snapshot.create",
            "snapshot.create",
            vec![("share", t("a")), ("name", t("s1"))],
        ),
        (
            "share.clone",
            "share.clone",
            vec![
                ("snapshot", t("base")),
                ("share", t("a")),
                ("name", t("a-copy")),
            ],
        ),
        (
            "share.resize",
            "share.resize",
            vec![("share", t("b")), ("size", n(8 * MIB))],
        ),
        ("share.delete", "share.delete", vec![("share", t("c"))]),
        (
            "nfs export.create",
            "export.create",
            vec![
                ("share", t("e")),
                ("protocol", t("nfs")),
                ("clients", Value::Array(vec![t("127.0.0.1")])),
            ],
        ),
        ("share.list", "share.list", vec![]),
        ("tree", "tree", vec![]),
        ("export.list", "export.list", vec![]),
    ];
    let others: Vec<_> = others
        .into_iter()
        .map(|(label, op, a)| spawn_call(d, &events, label, op, a))
        .collect();
    for th in others.into_iter().chain(hung) {
        th.join().unwrap();
    }
    let events = std::mem::take(&mut *events.lock().unwrap());
    let order: Vec<&str> = events.iter().map(|(l, _)| l.as_str()).collect();
    eprintln!("completion order: {order:?}");
    let first_hung = order.iter().position(|l| l.starts_with("hung")).unwrap();
    assert_eq!(
        first_hung,
        events.len() - 5,
        "a request on another object waited for the hung tgtd request: {order:?}"
    );
    for (label, r) in &events {
        match (label.as_str(), r) {
            ("hung reconcile", Ok(v)) => {
                // It could not check tgt, and says so; everything else it checked.
                let f = format!("{:?}", sub(v, "findings"));
                assert!(
                    f.contains("unavailable") && f.contains("did not finish"),
                    "{f}"
                );
            }
            ("hung share.resize", Ok(v)) => {
                // The grow is done; the target could not be told, and the reply says so.
                let w = format!("{:?}", sub(v, "warnings"));
                assert!(w.contains("tgt") && w.contains("did not finish"), "{w}");
            }
            (l, Ok(_)) if !l.starts_with("hung") => {}
            (l, Err(ClientError::Remote(e))) if l.starts_with("hung") && e.code == "busy" => {
                assert!(e.message.contains("tgtadm"), "{label}: {}", e.message);
            }
            (_, r) => panic!("{label}: {r:?}"),
        }
    }

    // tgtd wakes up, and may still carry out the requests that timed out.
    drop(resume);
    // The interrupted delete left hung3's export half-removed, and says so.
    let e = d.ok(
        "export.show",
        vec![("share", t("hung3")), ("protocol", t("iscsi"))],
    );
    assert_eq!(field(&e, "state"), "deleting");
    // A half-removed export is not handed out as if it were there.
    let iscsi = |share: &str| vec![("share", t(share)), ("protocol", t("iscsi"))];
    d.err("export.create", iscsi("hung3"), "busy");
    let conn = Value::Map(vec![
        (t("host"), t("h3")),
        (t("initiator"), t("iqn.2026-11.org.example:h3")),
    ]);
    d.err(
        "share.attach",
        vec![("share", t("hung3")), ("connector", conn)],
        "busy",
    );
    // Retrying the delete finishes it.
    d.ok(
        "share.delete",
        vec![("share", t("hung3")), ("force", Value::Bool(true))],
    );
    // hung4's LUN was re-opened (or dropped) behind shelf's back: reconcile repairs it once.
    let first = d.ok("reconcile", vec![]);
    eprintln!("reconcile after SIGCONT: {first:?}");
    check_invariants(&s);
}

/// Makes a directory immutable (so nothing, not even root, can create files in it) until
/// dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(dir: &std::path::Path) -> Immutable {
        sh(&["chattr", "+i", dir.to_str().unwrap()]);
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .args(["-i", self.0.to_str().unwrap()])
            .status();
    }
}

/// The clients the exports file grants a path to.
fn exported_to(file: &std::path::Path, path: &str) -> BTreeSet<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(path))
        .flat_map(|l| l.split_whitespace().skip(1))
        .map(|w| w.split('(').next().unwrap().to_string())
        .collect()
}

#[test]
fn a_failed_nfs_attach_or_detach_changes_no_access_later() {
    // The exports file lives on the scratch XFS (exportfs never reads it), so making its
    // directory immutable fails shelfd's writes without touching anything shared.
    let xfs = Xfs::new("attachfail", 1 << 30);
    let dir = xfs.mount.join("etc");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("shelf.exports");
    let layout = Layout::on_xfs(
        &xfs,
        &format!(
            "reconcile_interval = 0\n[nfs]\nexports_file = {:?}\nhost = \"127.0.0.1\"\n",
            file.display().to_string()
        ),
    );
    let d = Daemon::start(&layout);
    let nfs = |share: &str| {
        vec![
            ("share", t(share)),
            ("protocol", t("nfs")),
            ("clients", Value::Array(vec![t("127.0.0.1")])),
        ]
    };
    let attach = |ip: &str| {
        vec![
            ("share", t("a")),
            ("protocol", t("nfs")),
            (
                "connector",
                Value::Map(vec![(t("host"), t(ip)), (t("ip"), t(ip))]),
            ),
        ]
    };
    let mut paths = BTreeMap::new();
    for name in ["a", "b"] {
        let s = d.ok("share.create", vec![("name", t(name)), ("size", n(MIB))]);
        let id = field(sub(&s, "share"), "id");
        paths.insert(
            name,
            xfs.mount.join("pool/shares").join(id).display().to_string(),
        );
    }
    d.ok("export.create", nfs("a"));
    let granted = |want: &[&str]| {
        let want: BTreeSet<String> = want.iter().map(|c| c.to_string()).collect();
        assert_eq!(exported_to(&file, &paths["a"]), want);
    };

    // The attach cannot write the exports file and fails ...
    let frozen = Immutable::new(&dir);
    let r = d.call("share.attach", attach("192.0.2.7"));
    assert!(r.is_err(), "attach with an unwritable exports file: {r:?}");
    drop(frozen);
    assert_eq!(list(&d, "attachment.list"), Vec::<Value>::new());
    // ... and the next change of any export must not grant the failed client access.
    d.ok("export.create", nfs("b"));
    granted(&["127.0.0.1"]);

    // The same for a detach: it fails, the client stays attached and keeps its access.
    d.ok("share.attach", attach("192.0.2.8"));
    granted(&["127.0.0.1", "192.0.2.8"]);
    let frozen = Immutable::new(&dir);
    let r = d.call("share.detach", attach("192.0.2.8"));
    assert!(r.is_err(), "detach with an unwritable exports file: {r:?}");
    drop(frozen);
    assert_eq!(list(&d, "attachment.list").len(), 1);
    d.ok(
        "export.delete",
        vec![("share", t("b")), ("protocol", t("nfs"))],
    );
    granted(&["127.0.0.1", "192.0.2.8"]);
    // (No reconcile here: exportfs does not read this private file, so the kernel's table
    // never holds these exports.)
}

/// Thaws a frozen filesystem on drop (a frozen one could not even be unmounted).
struct Thaw(std::path::PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fsfreeze")
            .arg("--unfreeze")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_stalled_filesystem_call_blocks_nobody_working_on_other_shares() {
    // A second pool on its own XFS; freezing that filesystem stalls any write to it (here:
    // a snapshot's reflink copy) for as long as we like, with no timing involved.
    let cold = Xfs::new("cold", 1 << 30);
    let s = setup(
        "freeze",
        &format!(
            "[pools.cold]\npath = {:?}\n",
            cold.mount.join("pool").display().to_string()
        ),
    );
    let d = &s.d;
    d.ok(
        "share.create",
        vec![("name", t("c1")), ("pool", t("cold")), ("size", n(8 * MIB))],
    );
    for name in ["a", "b", "c", "e", "i"] {
        d.ok(
            "share.create",
            vec![("name", t(name)), ("size", n(4 * MIB))],
        );
    }
    d.ok(
        "snapshot.create",
        vec![("share", t("a")), ("name", t("base"))],
    );

    sh(&["fsfreeze", "--freeze", cold.mount.to_str().unwrap()]);
    let thaw = Thaw(cold.mount.clone());
    let events: Events = Default::default();
    let stalled = spawn_call(
        d,
        &events,
        "stalled snapshot.create",
        "snapshot.create",
        vec![("share", t("c1")), ("name", t("s1"))],
    );
    // The snapshot's row is recorded before its copy starts; then the copy stalls.
    assert!(eventually(30, || {
        list(d, "snapshot.list")
            .iter()
            .any(|x| field(x, "share_name") == "c1" && field(x, "state") == "creating")
    }));
    let others: Vec<Call> = vec![
        (
            "share.create",
            "share.create",
            vec![("name", t("new")), ("size", n(4 * MIB))],
        ),
        (
            "snapshot.create",
            "snapshot.create",
            vec![("share", t("a")), ("name", t("s1"))],
        ),
        (
            "share.clone",
            "share.clone",
            vec![
                ("snapshot", t("base")),
                ("share", t("a")),
                ("name", t("a-copy")),
            ],
        ),
        (
            "share.resize",
            "share.resize",
            vec![("share", t("b")), ("size", n(8 * MIB))],
        ),
        ("share.delete", "share.delete", vec![("share", t("c"))]),
        (
            "nfs export.create",
            "export.create",
            vec![
                ("share", t("e")),
                ("protocol", t("nfs")),
                ("clients", Value::Array(vec![t("127.0.0.1")])),
            ],
        ),
        (
            "iscsi export.create",
            "export.create",
            vec![("share", t("i")), ("protocol", t("iscsi"))],
        ),
        ("share.show", "share.show", vec![("share", t("c1"))]),
        ("tree", "tree", vec![]),
        ("pool.list", "pool.list", vec![]),
    ];
    let n_others = others.len();
    for th in others
        .into_iter()
        .map(|(label, op, a)| spawn_call(d, &events, label, op, a))
        .collect::<Vec<_>>()
    {
        th.join().unwrap();
    }
    {
        let events = events.lock().unwrap();
        assert_eq!(
            events.len(),
            n_others,
            "the stalled snapshot finished while frozen?"
        );
        for (label, r) in events.iter() {
            assert!(r.is_ok(), "{label}: {r:?}");
        }
    }
    drop(thaw);
    stalled.join().unwrap();
    let (label, r) = events.lock().unwrap().pop().unwrap();
    assert_eq!(label, "stalled snapshot.create");
    assert!(r.is_ok(), "after the thaw: {r:?}");
    check_invariants(&s);
}

#[test]
fn an_iscsi_request_cut_short_by_a_stalled_tgtd_does_not_break_the_next_one() {
    let s = setup("tgtstale", "command_timeout = 2\n");
    let d = &s.d;
    d.ok(
        "share.create",
        vec![
            ("name", t("m")),
            ("size", n(4 * MIB)),
            ("multiattach", Value::Bool(true)),
        ],
    );
    let attach = |op: &str, host: &str| {
        let conn = Value::Map(vec![
            (t("host"), t(host)),
            (
                t("initiator"),
                t(&format!("iqn.2026-11.org.example:{host}")),
            ),
        ]);
        d.call(op, vec![("share", t("m")), ("connector", conn)])
    };
    attach("share.attach", "ha").unwrap();

    // The detach's request to tgtd hangs and times out: the detach fails cleanly, and tgtd may or
    // may not carry out the unbind once it runs again.
    s.tgtd.signal(nix::sys::signal::Signal::SIGSTOP);
    let resume = Resume(&s.tgtd);
    let r = attach("share.detach", "ha");
    assert_eq!(
        r.as_ref().err().and_then(|e| e.code()),
        Some("busy"),
        "{r:?}"
    );
    drop(resume);

    // The next attach works from what tgtd really has, and leaves both hosts allowed.
    let r = attach("share.attach", "hb");
    assert!(r.is_ok(), "attach after the stall: {r:?}");
    let e = d.ok(
        "export.show",
        vec![("share", t("m")), ("protocol", t("iscsi"))],
    );
    assert_eq!(allowed(&e).len(), 2, "{e:?}");
    let report = d.ok("reconcile", vec![]);
    eprintln!("reconcile: {:?}", sub(&report, "findings"));
    check_invariants(&s);
}
