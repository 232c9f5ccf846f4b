//! Hostile config files: unknown keys, wrong types, absurd values and pathological TOML
//! make `shelfd --check-config` exit non-zero with a message that names the key.

mod common;

use std::process::Command;

use common::scratch;

/// A config file with unknown keys, wrong types or absurd values: `--check-config` exits
/// non-zero and names the key.
#[test]
fn hostile_config_files_are_refused_naming_the_key() {
    let dir = scratch("hostile-config");
    let base = "state_dir = \"/var/tmp/shelf-hostile-unused\"\nsocket = \"/var/tmp/shelf-hostile-unused/s.sock\"\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown top-level key", format!("{base}evil = 1\n"), "evil"),
        (
            "unknown key in a table",
            format!("{base}[iscsi]\nallow_all = true\n"),
            "allow_all",
        ),
        (
            "file pool under /dev (a tenant's link to a disk would pass for an LVM volume)",
            format!("{base}[pools.p]\npath = \"/dev/shm/shelf-pool\"\n"),
            "pools.p",
        ),
        (
            "file pool reaching /dev through ..",
            format!("{base}[pools.p]\npath = \"/var/../dev/shm/p\"\n"),
            "under /dev",
        ),
        (
            "the node id (made at the first start, never configured)",
            format!("{base}node_id = \"0f8fad5b-d9cb-469f-a165-70867728950e\"\n"),
            "node_id cannot be set",
        ),
        (
            "a node name that is not a name",
            format!("{base}node_name = \"a\\nb\"\n"),
            "node_name",
        ),
        (
            "unknown pool key",
            format!("{base}[pools.p]\nrm = \"-rf\"\n"),
            "rm",
        ),
        (
            "wrong type",
            format!("{base}max_frame_size = \"big\"\n"),
            "max_frame_size",
        ),
        (
            "negative",
            format!("{base}max_in_flight = -1\n"),
            "max_in_flight",
        ),
        (
            "beyond u32",
            format!("{base}max_frame_size = 4294967296\n"),
            "max_frame_size",
        ),
        (
            "beyond i64",
            format!("{base}command_timeout = 99999999999999999999\n"),
            "command_timeout",
        ),
        (
            "float",
            format!("{base}max_in_flight = 1.5\n"),
            "max_in_flight",
        ),
        (
            "frame too small",
            format!("{base}max_frame_size = 0\n"),
            "max_frame_size",
        ),
        (
            "frame too large",
            format!("{base}max_frame_size = 1073741824\n"),
            "max_frame_size",
        ),
        (
            "in-flight zero",
            format!("{base}max_in_flight = 0\n"),
            "max_in_flight",
        ),
        (
            "in-flight huge",
            format!("{base}max_in_flight = 1000000\n"),
            "max_in_flight",
        ),
        (
            "timeout zero",
            format!("{base}command_timeout = 0\n"),
            "command_timeout",
        ),
        (
            "reconcile a year",
            format!("{base}reconcile_interval = 31536000\n"),
            "reconcile_interval",
        ),
        (
            "relative state_dir",
            "state_dir = \"state\"\nsocket = \"/s.sock\"\n".into(),
            "state_dir",
        ),
        (
            "relative socket",
            "state_dir = \"/s\"\nsocket = \"s.sock\"\n".into(),
            "socket",
        ),
        (
            "pool name with slash",
            format!("{base}[pools.\"../etc\"]\n"),
            "pools.../etc",
        ),
        (
            "pool name with newline",
            format!("{base}[pools.\"a\\nb\"]\n"),
            "pools.",
        ),
        (
            "relative pool path",
            format!("{base}[pools.p]\npath = \"pool\"\n"),
            "pools.p.path",
        ),
        (
            "pool kind unknown",
            format!("{base}[pools.p]\nkind = \"zfs\"\n"),
            "kind",
        ),
        (
            "iscsi driver nfs",
            format!("{base}[iscsi]\ndriver = \"kernel\"\n"),
            "iscsi.driver",
        ),
        (
            "nfs driver unknown",
            format!("{base}[nfs]\ndriver = \"smb\"\n"),
            "driver",
        ),
        (
            "iqn prefix with space",
            format!("{base}[iscsi]\niqn_prefix = \"iqn.2026-11.org.ex ample\"\n"),
            "iscsi.iqn_prefix",
        ),
        (
            "portal without port",
            format!("{base}[iscsi]\nportal = \"127.0.0.1\"\n"),
            "iscsi.portal",
        ),
        (
            "nfs host injection",
            format!("{base}[nfs]\nhost = \"h *(rw)\"\n"),
            "nfs.host",
        ),
        (
            "relative exports file",
            format!("{base}[nfs]\nexports_file = \"x.exports\"\n"),
            "nfs.exports_file",
        ),
        ("tables as values", format!("{base}pools = 3\n"), "pools"),
        ("not toml", "\u{0}\u{1}binary".to_string(), "TOML"),
        (
            "arrays nested 100000 deep",
            format!(
                "{base}evil = {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            "evil",
        ),
        (
            "tables nested 20000 deep",
            format!(
                "{base}evil = {}1{}\n",
                "{a=".repeat(20_000),
                "}".repeat(20_000)
            ),
            "evil",
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, key) in &cases {
        let path = dir.path().join("shelf.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_shelfd"))
            .arg("--check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(key) || out.status.code().is_none() {
            failures.push(format!(
                "{what}: exit {:?}, stderr {:?} (wanted the key {key:?})",
                out.status.code(),
                stderr.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And the base config itself is fine, so the cases above fail for their one change.
    let path = dir.path().join("shelf.toml");
    std::fs::write(&path, base).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shelfd"))
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
