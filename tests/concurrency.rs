//! Concurrency: 64 clients hammer one real shelfd (real SQLite, XFS, tgtd and exportfs)
//! with a random mix of mutations on a small shared name space, so the same objects are
//! raced for; afterwards the tree, the disk and the target daemons must agree, before and
//! after a restart. A second test shows that a hung external command (a stopped tgtd)
//! blocks nobody working on other objects.
//!
//! `SHELF_CONC_SEED` replays a run; `SHELF_CONC_SECS` changes its length (default 25).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ciborium::Value;
use common::*;
use shelf::client::{args, get, get_u64, Client, ClientError};

const MIB: u64 = 1 << 20;
const CLIENTS: usize = 64;
/// Share names all clients fight over (creates, clones and deletes use the same names).
const SHARE_NAMES: u64 = 12;
const SNAPSHOT_NAMES: u64 = 4;
/// A request without an answer for this long is a hang.
const HANG: Duration = Duration::from_secs(60);
/// The error codes a well-behaved server may give under contention.
const CLEAN: &[&str] = &[
    "not_found",
    "already_exists",
    "has_dependents",
    "busy",
    "invalid_argument",
    "no_space",
];
const PREFIX: &str = "iqn.2026-11.org.example.shelf";

/// splitmix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Fields drop in order: the daemon first, then tgtd, the exports file, the filesystem.
struct Setup {
    d: Daemon,
    tgtd: Tgtd,
    ef: ExportsFile,
    xfs: Xfs,
}

fn setup(tag: &str, extra: &str) -> Setup {
    let xfs = Xfs::new(tag, 2 << 30);
    let tgtd = Tgtd::start();
    let ef = ExportsFile::new(tag);
    let layout = Layout::on_xfs(
        &xfs,
        &format!(
            "reconcile_interval = 0\n{extra}\n{}{}",
            tgtd.config(),
            ef.config()
        ),
    );
    let d = Daemon::start(&layout);
    Setup { d, tgtd, ef, xfs }
}

fn b(x: bool) -> Value {
    Value::Bool(x)
}

fn share_name(rng: &mut Rng) -> Value {
    t(&format!("s{}", rng.below(SHARE_NAMES)))
}

fn connector(rng: &mut Rng) -> Value {
    let h = rng.below(3);
    Value::Map(vec![
        (t("host"), t(&format!("host{h}"))),
        (t("ip"), t(&format!("127.0.0.{}", h + 1))),
        (
            t("initiator"),
            t(&format!("iqn.2026-11.org.example:host{h}")),
        ),
    ])
}

/// One random request of the mix.
fn random_request(rng: &mut Rng) -> (&'static str, Vec<(&'static str, Value)>) {
    let share = share_name(rng);
    let snap = t(&format!("p{}", rng.below(SNAPSHOT_NAMES)));
    let protocol = if rng.coin() { "nfs" } else { "iscsi" };
    match rng.below(100) {
        0..=13 => {
            let mut a = vec![("name", share), ("size", n((1 + rng.below(4)) * MIB))];
            if rng.below(4) == 0 {
                a.push(("sparse", b(false)));
            }
            ("share.create", a)
        }
        14..=25 => ("snapshot.create", vec![("share", share), ("name", snap)]),
        26..=33 => (
            "share.clone",
            vec![
                ("snapshot", snap),
                ("share", share),
                ("name", share_name(rng)),
            ],
        ),
        34..=41 => (
            "share.resize",
            vec![("share", share), ("size", n((1 + rng.below(16)) * MIB))],
        ),
        42..=49 => (
            "share.delete",
            vec![
                ("share", share),
                ("recursive", b(rng.below(4) != 0)),
                ("force", b(rng.coin())),
            ],
        ),
        50..=56 => (
            "snapshot.delete",
            vec![("snapshot", snap), ("share", share)],
        ),
        57..=66 if protocol == "nfs" => (
            "export.create",
            vec![
                ("share", share),
                ("protocol", t("nfs")),
                ("clients", Value::Array(vec![t("127.0.0.1")])),
            ],
        ),
        57..=66 => (
            "export.create",
            vec![("share", share), ("protocol", t("iscsi"))],
        ),
        67..=72 => (
            "export.delete",
            vec![
                ("share", share),
                ("protocol", t(protocol)),
                ("force", b(rng.coin())),
            ],
        ),
        73..=84 => {
            let op = if rng.below(12) < 7 {
                "share.attach"
            } else {
                "share.detach"
            };
            let mut a = vec![("share", share), ("connector", connector(rng))];
            if rng.coin() {
                a.push(("protocol", t(protocol)));
            }
            (op, a)
        }
        85..=87 => ("share.list", vec![]),
        88..=91 => ("tree", vec![]),
        92..=95 => ("share.show", vec![("share", share)]),
        96 => ("snapshot.list", vec![]),
        97 | 98 => ("export.list", vec![]),
        _ => ("reconcile", vec![]),
    }
}

/// Per-operation outcome counts, and every unclean outcome.
#[derive(Default)]
struct Tally {
    ok: BTreeMap<String, u64>,
    errors: BTreeMap<String, BTreeMap<String, u64>>,
    bad: Vec<String>,
    /// Failures caused by other programs on this machine, not by shelfd (see `foreign`).
    interference: Vec<String>,
    /// tgtd is stopped now and then: export warnings and reconcile findings are expected.
    chaos: bool,
}

/// `exportfs -r` reads every file in /etc/exports.d; when another program (another test
/// run) removes its file at that moment, exportfs fails, and so does shelfd's request, with
/// `internal`. That is not shelfd's doing: recognise it so it cannot fail the run.
fn foreign(e: &shelf::client::RemoteError) -> bool {
    let Some(rest) = e.message.split("can't open /etc/exports.d/").nth(1) else {
        return false;
    };
    let file = rest.split(" for reading").next().unwrap_or(rest);
    e.code == "internal"
        && e.message.contains("`exportfs -r` failed")
        && !file.contains(&format!("-{}-", std::process::id()))
}

impl Tally {
    fn record(&mut self, op: &str, a: &[(&str, Value)], r: &Result<Value, ClientError>) {
        match r {
            Ok(v) => {
                *self.ok.entry(op.to_string()).or_default() += 1;
                if let Some(problem) = wrong_object(op, a, v).filter(|_| !self.chaos) {
                    self.bad
                        .push(format!("{op} {a:?}: answered {v:?}: {problem}"));
                }
                // A mutation that succeeded but could not refresh an export says so.
                if let Some(w) = get(v, "warnings").filter(|_| !self.chaos) {
                    self.bad.push(format!("{op} {a:?}: ok with warnings {w:?}"));
                }
            }
            Err(ClientError::Remote(e)) => {
                *self
                    .errors
                    .entry(op.to_string())
                    .or_default()
                    .entry(e.code.clone())
                    .or_default() += 1;
                if foreign(e) {
                    self.interference
                        .push(format!("{op} {a:?}: {}: {}", e.code, e.message));
                } else if !CLEAN.contains(&e.code.as_str()) {
                    self.bad.push(format!(
                        "{op} {a:?}: unclean error {}: {}",
                        e.code, e.message
                    ));
                }
            }
            Err(e) => self.bad.push(format!(
                "{op} {a:?}: no answer within {HANG:?} or connection lost: {e}"
            )),
        }
    }

    fn merge(&mut self, other: Tally) {
        for (k, v) in other.ok {
            *self.ok.entry(k).or_default() += v;
        }
        for (k, m) in other.errors {
            for (c, v) in m {
                *self
                    .errors
                    .entry(k.clone())
                    .or_default()
                    .entry(c)
                    .or_default() += v;
            }
        }
        self.bad.extend(other.bad);
        self.interference.extend(other.interference);
    }
}

/// Whether a successful reply is about the object the request named, at the asked size.
fn wrong_object(op: &str, a: &[(&str, Value)], v: &Value) -> Option<String> {
    let arg = |k: &str| a.iter().find(|(key, _)| *key == k).map(|(_, v)| v);
    if op == "reconcile" {
        // While it holds a driver alone, every export of that driver is settled and the
        // daemon already holds it: a finding means an operation left the two apart.
        let findings = get(v, "findings")?;
        return (findings != &Value::Array(vec![])).then(|| "reconcile found work".into());
    }
    let (obj, checks): (&str, Vec<(&str, &str)>) = match op {
        "share.create" => ("share", vec![("name", "name"), ("size", "size")]),
        "share.clone" => ("share", vec![("name", "name")]),
        "share.resize" => ("share", vec![("share", "name"), ("size", "size")]),
        "snapshot.create" => ("snapshot", vec![("name", "name"), ("share", "share_name")]),
        _ => return None,
    };
    let got = get(v, obj)?;
    for (arg_key, reply_key) in checks {
        if arg(arg_key) != get(got, reply_key) {
            return Some(format!("{reply_key} differs from the request's {arg_key}"));
        }
    }
    (field(got, "state") != "available").then(|| "not available".to_string())
}

/// One client: random requests until `until`; every fourth client pipelines up to four.
fn run_client(
    socket: std::path::PathBuf,
    seed: u64,
    index: usize,
    until: Instant,
    chaos: bool,
) -> Tally {
    let mut rng = Rng(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut tally = Tally {
        chaos,
        ..Tally::default()
    };
    let mut c = Client::connect(&socket).expect("connect");
    c.set_timeout(Some(HANG)).unwrap();
    while Instant::now() < until {
        let depth = if index % 4 == 0 { 1 + rng.below(4) } else { 1 };
        let batch: Vec<_> = (0..depth).map(|_| random_request(&mut rng)).collect();
        if depth == 1 {
            let (op, a) = &batch[0];
            let r = c.call(op, args(a.clone()));
            let lost = matches!(r, Err(ref e) if e.code().is_none());
            tally.record(op, a, &r);
            if lost {
                return tally;
            }
            continue;
        }
        let mut pending = BTreeMap::new();
        for (op, a) in &batch {
            match c.send(op, args(a.clone())) {
                Ok(id) => {
                    pending.insert(id, (op, a));
                }
                Err(e) => {
                    tally.record(op, a, &Err(e));
                    return tally;
                }
            }
        }
        while !pending.is_empty() {
            match c.recv() {
                Ok(Some((Some(id), r))) => {
                    let (op, a) = pending.remove(&id).expect("a reply to a request we sent");
                    tally.record(op, a, &r.map_err(ClientError::Remote));
                }
                other => {
                    let ops: Vec<_> = pending
                        .values()
                        .map(|(op, a)| format!("{op} {a:?}"))
                        .collect();
                    tally.bad.push(format!("pipelined {ops:?}: {other:?}"));
                    return tally;
                }
            }
        }
    }
    tally
}

fn list(d: &Daemon, op: &str) -> Vec<Value> {
    d.ok(op, vec![]).into_array().unwrap()
}

fn ids(v: &[Value]) -> BTreeSet<String> {
    v.iter().map(|x| field(x, "id")).collect()
}

fn dir_names(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Walk the tree: every share and snapshot appears exactly once, in the right place.
fn check_tree(d: &Daemon, shares: &[Value], snaps: &[Value]) {
    let share_ids = ids(shares);
    let snap_by_id: BTreeMap<String, &Value> = snaps.iter().map(|s| (field(s, "id"), s)).collect();
    for s in snaps {
        assert!(
            share_ids.contains(&field(s, "share")),
            "snapshot without its share: {s:?}"
        );
    }
    let origin = |id: &str| {
        shares
            .iter()
            .find(|s| field(s, "id") == id)
            .and_then(|s| get(s, "origin_snapshot"))
            .and_then(Value::as_text)
            .map(str::to_string)
    };
    let (mut seen_shares, mut seen_snaps) = (Vec::new(), Vec::new());
    let mut stack: Vec<(Value, Option<String>)> =
        list(d, "tree").into_iter().map(|v| (v, None)).collect();
    while let Some((node, parent)) = stack.pop() {
        let id = field(&node, "id");
        match &parent {
            Some(p) => assert_eq!(
                origin(&id).as_ref(),
                Some(p),
                "clone under the wrong snapshot"
            ),
            // A root is an original share, or a clone whose origin snapshot is gone.
            None => {
                if let Some(o) = origin(&id) {
                    assert!(
                        !snap_by_id.contains_key(&o),
                        "clone {id} of live {o} is a root"
                    );
                }
            }
        }
        for snap in sub(&node, "snapshots").as_array().unwrap() {
            let sid = field(snap, "id");
            let row = snap_by_id
                .get(&sid)
                .unwrap_or_else(|| panic!("tree has unknown snapshot {sid}"));
            assert_eq!(field(row, "share"), id, "snapshot under the wrong share");
            for c in sub(snap, "clones").as_array().unwrap() {
                stack.push((c.clone(), Some(sid.clone())));
            }
            seen_snaps.push(sid);
        }
        seen_shares.push(id);
    }
    let n_shares = seen_shares.len();
    let n_snaps = seen_snaps.len();
    assert_eq!(seen_shares.into_iter().collect::<BTreeSet<_>>(), share_ids);
    assert_eq!(n_shares, shares.len(), "a share appears twice in the tree");
    assert_eq!(
        seen_snaps.into_iter().collect::<BTreeSet<_>>().len(),
        snaps.len()
    );
    assert_eq!(n_snaps, snaps.len(), "a snapshot appears twice in the tree");
}

/// The pool directory holds exactly the rows' files, at the rows' sizes.
fn check_disk(pool: &std::path::Path, shares: &[Value], snaps: &[Value]) {
    assert_eq!(
        dir_names(&pool.join("shares")),
        ids(shares),
        "share directories vs rows"
    );
    assert_eq!(
        dir_names(&pool.join("snapshots")),
        ids(snaps),
        "snapshot files vs rows"
    );
    for s in shares {
        let vol = volume(pool, &field(s, "id"));
        let len = std::fs::metadata(&vol).unwrap().len();
        assert_eq!(Some(len), get_u64(s, "size"), "volume size of {s:?}");
        check_identity(&vol, s, &["id", "name", "pool", "size", "sparse"]);
    }
    for s in snaps {
        let file = pool.join("snapshots").join(field(s, "id"));
        let len = std::fs::metadata(&file).unwrap().len();
        assert_eq!(Some(len), get_u64(s, "size"), "snapshot size of {s:?}");
        check_identity(
            &file,
            s,
            &["id", "name", "share", "share_name", "pool", "size"],
        );
    }
}

/// The `user.shelf.*` attributes a volume carries (to rebuild the database from) agree
/// with its row.
fn check_identity(path: &std::path::Path, row: &Value, keys: &[&str]) {
    let on_disk = shelf::sys::fs::get_identity(path).unwrap();
    for k in keys {
        let want = match get(row, k).unwrap() {
            Value::Text(x) => x.clone(),
            Value::Bool(x) => x.to_string(),
            Value::Integer(x) => i128::from(*x).to_string(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(
            on_disk.get(*k),
            Some(&want),
            "xattr {k} of {path:?} vs {row:?}"
        );
    }
}

/// Who may reach an export: its clients and its attached clients.
fn allowed(e: &Value) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = sub(sub(e, "options"), "clients")
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_text().unwrap().to_string())
        .collect();
    for a in sub(e, "attached").as_array().unwrap() {
        out.insert(field(a, "client"));
    }
    out
}

/// tgtd holds exactly the iSCSI rows' targets, and the exports file exactly the NFS rows'.
fn check_exports(s: &Setup, pool: &std::path::Path, exports: &[Value]) {
    let live: BTreeMap<String, _> = shelf::export::tgt::parse_show_target(&s.tgtd.show())
        .into_iter()
        .filter(|t| t.iqn.starts_with(&format!("{PREFIX}:")))
        .map(|t| (t.iqn.clone(), t))
        .collect();
    let accounts = s
        .tgtd
        .tgtadm(&["--mode", "account", "--op", "show"])
        .unwrap();
    let live_accounts: BTreeSet<String> = shelf::export::tgt::parse_show_accounts(&accounts)
        .into_iter()
        .filter(|a| a.starts_with("shelf-"))
        .collect();
    let (mut want_targets, mut want_accounts) = (BTreeSet::new(), BTreeSet::new());
    let mut want_nfs = BTreeMap::new();
    for e in exports {
        let share = field(e, "share");
        if field(e, "protocol") == "iscsi" {
            let iqn = field(e, "target");
            let t = live
                .get(&iqn)
                .unwrap_or_else(|| panic!("no tgt target for {e:?}"));
            assert_eq!(Some(t.tid as u64), get_u64(e, "tid"), "{e:?}");
            let lun = volume(pool, &share).display().to_string();
            assert_eq!(t.luns, BTreeMap::from([(1, lun)]), "{e:?}");
            assert_eq!(t.acl, allowed(e), "tgt ACL of {e:?}");
            let user = field(e, "chap_user");
            assert_eq!(t.accounts, BTreeSet::from([user.clone()]), "{e:?}");
            want_targets.insert(iqn);
            want_accounts.insert(user);
        } else if !allowed(e).is_empty() {
            want_nfs.insert(field(e, "target"), allowed(e));
        }
    }
    assert_eq!(
        live.keys().cloned().collect::<BTreeSet<_>>(),
        want_targets,
        "tgt targets vs rows"
    );
    assert_eq!(live_accounts, want_accounts, "CHAP accounts vs rows");
    let text = std::fs::read_to_string(&s.ef.path).unwrap_or_default();
    let mut in_file = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let mut words = line.split_whitespace();
        let path = words.next().unwrap().to_string();
        let clients = words
            .map(|w| w.split('(').next().unwrap().to_string())
            .collect();
        assert!(
            in_file.insert(path, clients).is_none(),
            "path twice: {text}"
        );
    }
    assert_eq!(in_file, want_nfs, "exports file vs rows:\n{text}");
    let prefix = pool.display().to_string();
    let mut in_kernel: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, c, _) in exportfs_v()
        .into_iter()
        .filter(|(p, _, _)| p.starts_with(&prefix))
    {
        in_kernel.entry(p).or_default().insert(c);
    }
    assert_eq!(in_kernel, want_nfs, "exportfs -v vs rows");
}

/// Attachments and the exports' attached lists say the same.
fn check_attachments(d: &Daemon, exports: &[Value]) {
    let mut from_exports = BTreeSet::new();
    for e in exports {
        for a in sub(e, "attached").as_array().unwrap() {
            from_exports.insert((field(e, "share"), field(e, "protocol"), field(a, "client")));
        }
    }
    let rows: BTreeSet<_> = list(d, "attachment.list")
        .iter()
        .map(|a| (field(a, "share"), field(a, "protocol"), field(a, "client")))
        .collect();
    assert_eq!(rows, from_exports, "attachments vs exports' attached lists");
}

/// Every invariant; returns the rows, to compare across a restart.
fn check_invariants(s: &Setup) -> Vec<Vec<Value>> {
    let d = &s.d;
    let pool = s.xfs.mount.join("pool");
    let shares = list(d, "share.list");
    let snaps = list(d, "snapshot.list");
    let exports = list(d, "export.list");
    for x in shares.iter().chain(&snaps).chain(&exports) {
        assert_eq!(field(x, "state"), "available", "unsettled: {x:?}");
    }
    check_tree(d, &shares, &snaps);
    for p in list(d, "pool.list") {
        let name = field(&p, "name");
        let in_pool = |v: &&Value| field(v, "pool") == name;
        let pool_shares: Vec<Value> = shares.iter().filter(in_pool).cloned().collect();
        let pool_snaps: Vec<Value> = snaps.iter().filter(in_pool).cloned().collect();
        check_disk(
            std::path::Path::new(&field(&p, "path")),
            &pool_shares,
            &pool_snaps,
        );
    }
    check_exports(s, &pool, &exports);
    check_attachments(d, &exports);
    let report = d.ok("reconcile", vec![]);
    assert_eq!(
        sub(&report, "findings"),
        &Value::Array(vec![]),
        "reconcile found work"
    );
    assert!(!d.log_text().contains("panicked"), "the daemon panicked");
    let attachments = list(d, "attachment.list");
    vec![shares, snaps, exports, attachments]
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
    for op in [
        "share.create",
        "snapshot.create",
        "share.clone",
        "export.create",
        "share.attach",
    ] {
        assert!(
            tally.ok.get(op).copied().unwrap_or(0) > 0,
            "no {op} ever succeeded"
        );
    }
    if chaos {
        // What tgtd did late (killed tgtadm's requests) is repaired once.
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

/// Whether a tgtadm talking to this control port is running (hung on a stopped tgtd).
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
fn a_hung_tgtadm_blocks_nobody_working_on_other_objects() {
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
        eventually(30, || tgtadm_running(s.tgtd.control)),
        "export.create never ran tgtadm"
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
        "a request on another object waited for the hung tgtadm: {order:?}"
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

    // tgtd wakes up, and may still carry out what the killed tgtadm asked for.
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
    let connector = Value::Map(vec![
        (t("host"), t("h3")),
        (t("initiator"), t("iqn.2026-11.org.example:h3")),
    ]);
    d.err(
        "share.attach",
        vec![("share", t("hung3")), ("connector", connector)],
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
        let connector = Value::Map(vec![
            (t("host"), t(host)),
            (
                t("initiator"),
                t(&format!("iqn.2026-11.org.example:{host}")),
            ),
        ]);
        d.call(op, vec![("share", t("m")), ("connector", connector)])
    };
    attach("share.attach", "ha").unwrap();

    // The detach's tgtadm hangs and is killed: the detach fails cleanly, and tgtd may or
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
