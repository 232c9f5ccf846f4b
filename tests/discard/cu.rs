//! libiscsi's `iscsi-test-cu` as a judge: run some of its suites against a LUN and read
//! which tests passed, from its own report.

use std::collections::BTreeSet;

use super::common::try_run_env;

/// The suites of `iscsi-test-cu --list` about logical block provisioning: UNMAP, GET LBA
/// STATUS, and WRITE SAME with its UNMAP bit.
pub const SUITES: &[&str] = &[
    "SCSI.Unmap",
    "SCSI.GetLBAStatus",
    "SCSI.WriteSame10.Unmap*",
    "SCSI.WriteSame16.Unmap*",
];

/// The tests of `suites` that pass against `url` (destructive tests allowed) logged in as
/// `initiator`, with `env` (the CHAP secret, `Login::env`, or nothing), as `Suite.Test`
/// names. Panics when the tool cannot run at all.
pub fn passed(
    url: &str,
    env: &[(&str, &str)],
    initiator: &str,
    suites: &[&str],
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for suite in suites {
        let test = format!("--test={suite}");
        let (_, stdout, stderr) = try_run_env(
            &["iscsi-test-cu", "--dataloss", &test, "-i", initiator, url],
            env,
        );
        assert!(
            stdout.contains("Run Summary"),
            "iscsi-test-cu {suite} did not run: {stdout}{stderr}"
        );
        out.extend(parse(&stdout));
    }
    out
}

/// Where one test of a report stands.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    /// Its `Test:` line was read, no verdict yet.
    Pending,
    /// `passed`.
    Passed,
    /// Skipped or failed: not a pass, whatever follows.
    Out,
}

/// The tests a CUnit report says passed: a `Test: NAME ...` line whose outcome is
/// `passed`, with no `[SKIPPED]` or `FAILED` on the way (a skipped test is reported on its
/// own line and counted as passed in CUnit's summary: it is not one here).
pub fn parse(report: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut suite = String::new();
    let mut current: Option<(String, Outcome)> = None;
    let settle = |current: &mut Option<(String, Outcome)>, out: &mut BTreeSet<String>| {
        if let Some((name, Outcome::Passed)) = current.take() {
            out.insert(name);
        }
    };
    for line in report.lines() {
        let l = line.trim();
        let text = if let Some(s) = l.strip_prefix("Suite: ") {
            settle(&mut current, &mut out);
            suite = s.trim().to_string();
            continue;
        } else if let Some(rest) = l.strip_prefix("Test: ") {
            settle(&mut current, &mut out);
            let (name, tail) = rest.split_once(" ...").unwrap_or((rest, ""));
            current = Some((format!("{suite}.{}", name.trim()), Outcome::Pending));
            tail
        } else if l.starts_with("Run Summary") {
            settle(&mut current, &mut out);
            continue;
        } else {
            l
        };
        if let Some((_, outcome)) = current.as_mut() {
            if text.contains("[SKIPPED]") || text.contains("FAILED") {
                *outcome = Outcome::Out;
            } else if text.ends_with("passed") && *outcome == Outcome::Pending {
                *outcome = Outcome::Passed;
            }
        }
    }
    settle(&mut current, &mut out);
    out
}

#[test]
fn parses_recorded_reports() {
    let thin = parse(include_str!("../fixtures/iscsi-test-cu-tgt-thin.txt"));
    assert_eq!(
        thin.iter().map(String::as_str).collect::<Vec<_>>(),
        ["GetLBAStatus.Simple", "Unmap.Simple", "Unmap.VPD"]
    );
    let thick = parse(include_str!("../fixtures/iscsi-test-cu-tgt-thick.txt"));
    assert!(thick.is_empty(), "skipped tests are not passes: {thick:?}");
}
