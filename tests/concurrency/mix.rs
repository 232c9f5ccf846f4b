//! The random mix of requests the 64 clients send, and the tally of what came back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ciborium::Value;
use shelf::client::{args, get, Client, ClientError};

use crate::common::*;
use crate::MIB;

/// Share names all clients fight over (creates, clones and deletes use the same names).
pub const SHARE_NAMES: u64 = 12;
pub const SNAPSHOT_NAMES: u64 = 4;
/// A request without an answer for this long is a hang.
pub const HANG: Duration = Duration::from_secs(60);
/// The error codes a well-behaved server may give under contention.
pub const CLEAN: &[&str] = &[
    "not_found",
    "already_exists",
    "has_dependents",
    "busy",
    "invalid_argument",
    "no_space",
];

/// splitmix64: small, seedable, good enough to pick operations.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

pub fn b(x: bool) -> Value {
    Value::Bool(x)
}

pub fn share_name(rng: &mut Rng) -> Value {
    t(&format!("s{}", rng.below(SHARE_NAMES)))
}

pub fn connector(rng: &mut Rng) -> Value {
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
pub fn random_request(rng: &mut Rng) -> (&'static str, Vec<(&'static str, Value)>) {
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
pub struct Tally {
    pub ok: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, BTreeMap<String, u64>>,
    pub bad: Vec<String>,
    /// Failures caused by other programs on this machine, not by shelfd (see `foreign`).
    pub interference: Vec<String>,
    /// tgtd is stopped now and then: export warnings and reconcile findings are expected.
    pub chaos: bool,
}

/// `exportfs -r` reads every file in /etc/exports.d; when another program (another test
/// run) removes or breaks its file at that moment, exportfs fails, and so does shelfd's
/// request, with `internal`. That is not shelfd's doing: recognise it (exportfs names only
/// files that are not ours) so it cannot fail the run.
pub fn foreign(e: &shelf::client::RemoteError) -> bool {
    let ours = format!("-{}-", std::process::id());
    let files: Vec<&str> = e
        .message
        .split("/etc/exports.d/")
        .skip(1)
        .map(|rest| rest.split([' ', ':']).next().unwrap_or(rest))
        .collect();
    e.code == "internal"
        && e.message.contains("`exportfs -r` failed")
        && !files.is_empty()
        && files.iter().all(|f| !f.contains(&ours))
}

#[test]
fn exportfs_failures_over_other_files_are_recognised() {
    let e = |message: String| shelf::client::RemoteError {
        code: "internal".into(),
        message,
    };
    let theirs = "`exportfs -r` failed (exit status: 1); stderr: exportfs: can't open \
                  /etc/exports.d/shelf-test-kburst-14344-43373.exports for reading";
    assert!(foreign(&e(theirs.into())));
    let ours = format!(
        "`exportfs -r` failed (exit status: 1); stderr: exportfs: \
         /etc/exports.d/shelf-test-conc-{}-4242.exports:1: bad option",
        std::process::id()
    );
    assert!(!foreign(&e(ours)));
    assert!(!foreign(&e("`exportfs -r` failed (exit status: 1)".into())));
}

impl Tally {
    pub fn record(&mut self, op: &str, a: &[(&str, Value)], r: &Result<Value, ClientError>) {
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

    pub fn merge(&mut self, other: Tally) {
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
pub fn wrong_object(op: &str, a: &[(&str, Value)], v: &Value) -> Option<String> {
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
pub fn run_client(
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
