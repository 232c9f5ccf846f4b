//! The benchmark still runs: `shelf-bench --quick` (tiny counts) against the real shelfd,
//! real tgtd, exportfs and a scratch XFS, and produces every section of its report. No
//! figure is checked: the machine's speed is not something a test can assert.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn quick_bench_runs_and_reports_every_operation() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shelf-bench"))
        .args(["--quick", "--shelfd", env!("CARGO_BIN_EXE_shelfd")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start shelf-bench");
    let pid = child.id();
    // A hang is a failure; a slow machine is not (the bound is generous).
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!("shelf-bench --quick did not finish within 600 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
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
        20,
        "10 operations at 2 concurrencies:\n{stdout}"
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
