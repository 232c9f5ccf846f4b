//! The benchmark still runs: `shelf-bench --quick` (tiny counts) against the real shelfd,
//! real tgtd, exportfs and a scratch XFS, and produces every section of its report. No
//! figure is checked: the machine's speed is not something a test can assert.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn quick_bench_runs_and_reports_every_operation() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shelf-bench"));
    cmd.args(["--quick", "--shelfd", env!("CARGO_BIN_EXE_shelfd")]);
    // A hang is a failure; a slow machine is not (the bound is generous).
    let run = common::output_within(cmd, Duration::from_secs(600));
    let status = run
        .status
        .expect("shelf-bench --quick did not finish within 600 s");
    let (stdout, stderr, pid) = (run.stdout, run.stderr, run.pid);
    assert!(status.success(), "shelf-bench failed:\n{stderr}\n{stdout}");
    for section in [
        "share.create |",
        "share.create + iSCSI export",
        "share.create + NFS export",
        "snapshot.create (volume fully written)",
        "share.clone",
        "share.attach + detach",
        "share.resize",
        "share.show",
        "share.list (10 shares)",
        "share.delete",
        "### Concurrency 1 ",
        "### Concurrency 2 ",
        "extents",
        "Send streams",
        "incremental (s2 from s1",
        "Scale: 20 shares with 20 snapshots",
        "iSCSI targets",
        "NFS exports",
        "tgtd killed and started empty",
        "resident memory",
    ] {
        assert!(
            stdout.contains(section),
            "no {section:?} in the report:\n{stdout}"
        );
    }
    // Every per-operation row has a ratio (a number, not "-").
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| share.") || l.starts_with("| snapshot.create (volume"))
        .filter(|l| l.contains("**"))
        .collect();
    assert_eq!(
        rows.len(),
        24,
        "10 operations, two also against the tgtd-socket floor, at 2 concurrencies:\n{stdout}"
    );
    for r in rows {
        let ratio = r.rsplit("**").nth(1).unwrap_or("");
        assert!(ratio.parse::<f64>().is_ok(), "no ratio in {r}");
    }
    // Every target came back after the tgtd restart.
    let line = stdout
        .lines()
        .find(|l| l.contains(" targets back"))
        .expect("a restart row");
    let before = line.split(" targets back").next().unwrap();
    let back = before.rsplit(' ').next().unwrap();
    let (got, want) = back.split_once('/').unwrap();
    assert_eq!(got, want, "targets back after the tgtd restart");
    // Nothing of the bench is left behind.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let mine = format!("shelf-bench-{}", pid);
    assert!(!mounts.contains(&mine), "a bench mount is left:\n{mounts}");
    assert!(!std::path::Path::new(&format!("/var/tmp/{mine}")).exists());
}
