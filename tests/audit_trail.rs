//! Issue 11 §4: an audit trail that cannot be erased or forged, against a real shelfd.
//!
//! * 100,500 refusals each from a reader (refused changes) and from a peer with no role
//!   do not evict the admin's earlier entries, and the log says how many it aggregated;
//! * an entry for a change is on disk when the reply says ok (SIGKILL right after the
//!   replies, 10 rounds of 5);
//! * a target with newlines, ANSI escapes and a bidi override prints on one line in
//!   `shelfctl audit`, and exactly in `--json`.

mod common;
mod peer;

use std::time::Instant;

use ciborium::Value;
use common::*;
use peer::*;
use shelf::client::{get, get_text, get_u64};

const MIB: u64 = 1 << 20;
const FLOOD: u64 = 100_500;
const READER: u32 = 4301;
const NOBODY: u32 = 4302;

fn entries(v: &Value) -> Vec<Value> {
    match get(v, "entries").unwrap_or(v) {
        Value::Array(a) => a.clone(),
        other => panic!("audit.list answered {other:?}"),
    }
}

fn total(v: &Value, kind: &str, key: &str) -> u64 {
    get(get(v, "totals").expect("totals"), kind)
        .and_then(|t| get_u64(t, key))
        .unwrap_or_else(|| panic!("totals.{kind}.{key} missing in {v:?}"))
}

/// What a terminal would act on instead of showing: C0/C1 controls, DEL, line and
/// paragraph separators, bidi embeddings, overrides and isolates (the test's own list).
fn shows_as_control(c: char) -> bool {
    c.is_control() || matches!(c as u32, 0x2028 | 0x2029 | 0x202a..=0x202e | 0x2066..=0x2069)
}

fn rows_in_db(d: &Daemon) -> i64 {
    let c = rusqlite::Connection::open_with_flags(
        d.state.join("shelf.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_flood_of_refusals_evicts_no_change_and_is_counted() {
    let xfs = Xfs::new("audit-flood", 512 * MIB);
    let layout = Layout::on_xfs(
        &xfs,
        &format!("[access]\nsocket_group = \"{NOGROUP}\"\nreader_users = [\"{READER}\"]\n"),
    );
    let d = Daemon::start(&layout);
    open_to_all(&[xfs.base(), d.socket.parent().unwrap()]);
    for name in ["before-1", "before-2", "before-3"] {
        d.ok(
            "share.create",
            vec![("name", t(name)), ("size", n(4 * MIB))],
        );
    }

    // A reader pipelines refused changes; a peer with no role pipelines hellos (refused
    // per request, or at connect once connections without a role are turned away).
    let frames = |op: &str, args: fn() -> Vec<(&'static str, Value)>| -> Vec<u8> {
        (1..=FLOOD).flat_map(|id| request(id, op, args())).collect()
    };
    // Both at once, each on its own connection.
    let t0 = Instant::now();
    let reader_conn = connect_as(READER, NOGROUP, &d.socket, xfs.base());
    let nobody_conn = connect_as(NOBODY, NOGROUP, &d.socket, xfs.base());
    let reader_frames = frames("share.delete", || vec![("share", t("before-1"))]);
    let nobody_frames = frames("hello", Vec::new);
    let reader = std::thread::spawn(move || flood(reader_conn, reader_frames, FLOOD));
    let nobody = std::thread::spawn(move || flood(nobody_conn, nobody_frames, FLOOD));
    // Meanwhile an admin changes things: each change's entry is committed before its
    // reply, behind whatever refusals are queued.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let during: Vec<f64> = (0..5)
        .map(|i| {
            let t0 = Instant::now();
            d.ok(
                "share.create",
                vec![("name", t(&format!("during-{i}"))), ("size", n(MIB))],
            );
            t0.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let nobody = nobody.join().unwrap();
    let nobody_secs = t0.elapsed().as_secs_f64();
    let reader = reader.join().unwrap();
    let reader_secs = t0.elapsed().as_secs_f64();
    assert_eq!(
        (reader.replies, reader.denied),
        (FLOOD, FLOOD),
        "every refused change is answered permission_denied"
    );
    assert_eq!(nobody.denied, nobody.replies, "{nobody:?}");

    let kept = d.ok(
        "audit.list",
        vec![("op", t("share.create")), ("uid", n(0)), ("limit", n(1000))],
    );
    let mut before: Vec<String> = entries(&kept)
        .iter()
        .map(|e| get_text(e, "target").unwrap().to_string())
        .collect();
    before.sort();
    assert_eq!(
        before,
        [
            "before-1", "before-2", "before-3", "during-0", "during-1", "during-2", "during-3",
            "during-4"
        ],
        "{kept:?}"
    );
    let log = d.ok(
        "audit.list",
        vec![("totals", Value::Bool(true)), ("limit", n(1000))],
    );
    assert_eq!(total(&log, "changes", "dropped_entries"), 0);
    let (requests, aggregated, rows) = (
        total(&log, "refusals", "requests"),
        total(&log, "refusals", "aggregated"),
        total(&log, "refusals", "entries"),
    );
    assert!(requests >= FLOOD + nobody.denied, "{log:?}");
    assert_eq!(
        requests,
        aggregated + rows + total(&log, "refusals", "dropped_requests")
    );
    assert!(aggregated >= FLOOD - rows, "{log:?}");
    // The reader's refusals of one op are one entry per minute, with their count.
    let reader_rows: u64 = entries(&log)
        .iter()
        .filter(|e| get_u64(e, "uid") == Some(READER.into()))
        .map(|e| {
            assert_eq!(get_text(e, "kind"), Some("refusal"));
            get_u64(e, "count").unwrap()
        })
        .sum();
    assert_eq!(reader_rows, FLOOD);
    println!(
        "refusal flood (two connections at once): reader {FLOOD} refused changes in \
         {reader_secs:.2} s ({:.0}/s); no-role peer {} replies of {FLOOD} ({}closed early) \
         in {nobody_secs:.2} s; \
         log: {requests} refusals in {rows} entries ({aggregated} aggregated), \
         {} audit rows in the database, {} changes kept; share.create during the flood: \
         {during:.1?} ms",
        FLOOD as f64 / reader_secs,
        nobody.replies,
        if nobody.closed_early { "" } else { "not " },
        rows_in_db(&d),
        total(&log, "changes", "entries"),
    );
}

#[test]
fn every_change_answered_ok_is_in_the_log_after_sigkill() {
    let xfs = Xfs::new("audit-kill", 512 * MIB);
    let mut d = Daemon::start(&Layout::on_xfs(&xfs, "reconcile_interval = 0\n"));
    // The price of the wait: sequential changes, each answered after its entry's commit.
    let mut times: Vec<f64> = (0..20)
        .map(|i| {
            let t0 = Instant::now();
            d.ok(
                "share.create",
                vec![("name", t(&format!("seq-{i}"))), ("size", n(MIB))],
            );
            t0.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "share.create, 20 sequential, entry committed before the reply: median {:.2} ms, max {:.2} ms",
        times[10], times[19]
    );
    let (rounds, per_round) = (10, 5);
    let mut acknowledged = Vec::new();
    for round in 0..rounds {
        let mut c = d.client();
        let names: Vec<String> = (0..per_round).map(|i| format!("k{round}-{i}")).collect();
        for name in &names {
            c.send(
                "share.create",
                shelf::client::args(vec![("name", t(name)), ("size", n(MIB))]),
            )
            .unwrap();
        }
        for _ in &names {
            let (_, r) = c.recv().unwrap().expect("a reply");
            r.expect("share.create ok");
        }
        // Every reply said ok: crash now.
        d.kill();
        acknowledged.extend(names);
        d.restart();
    }
    let log = d.ok(
        "audit.list",
        vec![("op", t("share.create")), ("limit", n(1000))],
    );
    let logged: std::collections::BTreeSet<String> = entries(&log)
        .iter()
        .filter(|e| get_text(e, "outcome") == Some("ok"))
        .map(|e| get_text(e, "target").unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !logged.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged changes are missing from the audit log after SIGKILL: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    println!(
        "durability: {} acknowledged changes, {} SIGKILLs, all in the log",
        acknowledged.len(),
        rounds
    );
}

#[test]
fn forged_lines_print_escaped_in_shelfctl_audit_and_exact_in_json() {
    let xfs = Xfs::new("audit-forge", 512 * MIB);
    let layout = Layout::on_xfs(
        &xfs,
        &format!("[access]\nsocket_group = \"{NOGROUP}\"\nreader_users = [\"{READER}\"]\n"),
    );
    let d = Daemon::start(&layout);
    open_to_all(&[xfs.base(), d.socket.parent().unwrap()]);
    let forged = "vol1\n2026-12-01 0 admin share.delete vol9 ok\u{1b}[2K\r\u{1b}[32mok\u{1b}[0m \u{202e}kcatta\u{9b}2J";
    // An admin's request with a hostile name: refused as invalid, audited with that text.
    assert!(d.call("share.delete", vec![("share", t(forged))]).is_err());
    d.err(
        "share.create",
        vec![("name", t(forged)), ("size", n(MIB))],
        "invalid_argument",
    );
    // An attach whose connector names the hostile text as its host.
    d.err(
        "share.attach",
        vec![
            ("share", t("vol1")),
            (
                "connector",
                Value::Map(vec![(t("host"), t(forged)), (t("ip"), t("127.0.0.1"))]),
            ),
        ],
        "not_found",
    );
    // A reader's refused change with the same text.
    let (code, _, err) = shelfctl_as(
        READER,
        NOGROUP,
        &d.socket,
        &["share", "create", forged, "1M"],
    );
    assert_eq!(code, 1, "{err}");

    let json = sh(&[
        env!("CARGO_BIN_EXE_shelfctl"),
        "--socket",
        d.socket.to_str().unwrap(),
        "--json",
        "audit",
    ]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    // `{entries, totals}` (an older shelfctl printed the bare array).
    let list = parsed
        .get("entries")
        .unwrap_or(&parsed)
        .as_array()
        .expect("entries");
    let hostile = list
        .iter()
        .filter(|e| e["target"].as_str() == Some(forged))
        .count();
    assert_eq!(hostile, 3, "JSON keeps the exact text: {json}");
    let attach_target = format!("vol1 for {forged}");
    assert!(
        list.iter()
            .any(|e| e["target"].as_str() == Some(attach_target.as_str())),
        "{json}"
    );

    let table = sh(&[
        env!("CARGO_BIN_EXE_shelfctl"),
        "--socket",
        d.socket.to_str().unwrap(),
        "audit",
    ]);
    let lines: Vec<&str> = table.lines().collect();
    // A header, one line per entry, the totals.
    assert_eq!(lines.len(), list.len() + 2, "{table}");
    assert!(
        !table.chars().any(|c| c != '\n' && shows_as_control(c)),
        "shelfctl audit printed a control or bidi character: {table:?}"
    );
    assert!(lines[1..].iter().all(|l| l
        .split_whitespace()
        .next()
        .is_some_and(|seq| seq.parse::<u64>().is_ok())
        || l.starts_with("changes:")));
    assert!(
        lines.iter().filter(|l| l.contains("vol9")).count() == 4,
        "{table}"
    );
    println!("{table}");
}
