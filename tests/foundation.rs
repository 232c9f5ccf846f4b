//! The foundation, end to end: a real shelfd on a real XFS (reflink), driven over its socket.

mod common;

use ciborium::Value;
use common::*;
use shelf::client::{get_text, get_u64, ClientError};

const MIB: u64 = 1 << 20;

fn create(d: &Daemon, name: &str, size: u64) -> String {
    let r = d.ok("share.create", vec![("name", t(name)), ("size", n(size))]);
    field(sub(&r, "share"), "id")
}

#[test]
fn snapshot_and_clone_keep_their_point_in_time_across_deletes_and_restart() {
    let xfs = Xfs::new("lineage", 1 << 30);
    let layout = Layout::on_xfs(&xfs, "");
    let mut d = Daemon::start(&layout);
    let pool_dir = xfs.mount.join("pool");

    let pool = d.ok("pool.show", vec![("name", t("default"))]);
    assert_eq!(
        sub(&pool, "reflink"),
        &Value::Bool(true),
        "XFS with reflink=1 must reflink"
    );

    let origin = create(&d, "origin", 64 * MIB);
    let vol = volume(&pool_dir, &origin);
    assert_eq!(std::fs::metadata(&vol).unwrap().len(), 64 * MIB);
    let a = pattern(1, 4 * MIB as usize);
    write_at(&vol, 0, &a);

    let snap = d.ok(
        "snapshot.create",
        vec![("share", t("origin")), ("name", t("s1"))],
    );
    let snap_id = field(sub(&snap, "snapshot"), "id");

    let b = pattern(2, MIB as usize);
    write_at(&vol, MIB, &b);

    let clone = d.ok(
        "share.clone",
        vec![
            ("snapshot", t("s1")),
            ("share", t("origin")),
            ("name", t("copy")),
        ],
    );
    let clone_id = field(sub(&clone, "share"), "id");
    assert_eq!(field(sub(&clone, "share"), "origin_snapshot"), snap_id);
    let cvol = volume(&pool_dir, &clone_id);
    assert_eq!(
        read_at(&cvol, 0, a.len()),
        a,
        "the clone holds the snapshot-time data"
    );
    assert_eq!(
        read_at(&vol, MIB, b.len()),
        b,
        "the origin has the later write"
    );

    let tree_before = d.ok("tree", vec![]);

    d.ok("snapshot.delete", vec![("snapshot", t(&snap_id))]);
    d.ok("share.delete", vec![("share", t("origin"))]);
    assert!(!vol.exists(), "origin volume removed");
    assert_eq!(
        read_at(&cvol, 0, a.len()),
        a,
        "the clone survives its origin"
    );

    let shares_before = d.ok("share.list", vec![]);
    let tree_mid = d.ok("tree", vec![]);
    assert_ne!(tree_before, tree_mid);
    assert_eq!(d.stop().code(), Some(0), "SIGTERM exits 0");
    assert!(!layout.socket.exists(), "socket removed at shutdown");
    d.restart();
    assert_eq!(
        d.ok("share.list", vec![]),
        shares_before,
        "the tree survives a restart"
    );
    assert_eq!(d.ok("tree", vec![]), tree_mid);
    let shown = d.ok("share.show", vec![("share", t("copy"))]);
    assert_eq!(
        field(&shown, "origin_snapshot"),
        snap_id,
        "lineage is kept after the snapshot is gone"
    );
    assert_eq!(read_at(&cvol, 0, a.len()), a);
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused() {
    let xfs = Xfs::new("lock", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "");
    let d = Daemon::start(&layout);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shelfd"))
        .arg("--config")
        .arg(&layout.config)
        .arg("--socket")
        .arg(xfs.base().join("other.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    assert!(
        err.contains(&d.pid().to_string()),
        "names the holder: {err}"
    );
    d.ok("hello", vec![]);
}

#[test]
fn the_rules_of_the_tree_are_enforced() {
    let xfs = Xfs::new("rules", 512 << 20);
    let d = Daemon::start(&Layout::on_xfs(&xfs, ""));
    create(&d, "v", 8 * MIB);
    d.ok("snapshot.create", vec![("share", t("v")), ("name", t("s"))]);

    let m = d.err("share.delete", vec![("share", t("v"))], "has_dependents");
    assert!(m.contains("recursive"), "{m}");
    let m = d.err(
        "share.resize",
        vec![("share", t("v")), ("size", n(4 * MIB))],
        "invalid_argument",
    );
    assert!(m.contains("shrink"), "{m}");
    d.err(
        "share.resize",
        vec![("share", t("v")), ("size", n(8 * MIB + 1))],
        "invalid_argument",
    );
    d.err(
        "share.create",
        vec![("name", t("v")), ("size", n(16 * MIB))],
        "already_exists",
    );
    let again = d.ok("share.create", vec![("name", t("v")), ("size", n(8 * MIB))]);
    assert_eq!(
        sub(&again, "changed"),
        &Value::Bool(false),
        "same parameters: a retry"
    );
    d.err(
        "snapshot.create",
        vec![("share", t("nope")), ("name", t("s"))],
        "not_found",
    );
    for bad in ["../x", "a/b", "", ".x", "a b", &"x".repeat(10_000)] {
        d.err(
            "share.create",
            vec![("name", t(bad)), ("size", n(MIB))],
            "invalid_argument",
        );
    }
    d.err(
        "share.create",
        vec![("name", t("z")), ("size", n(0))],
        "invalid_argument",
    );
    d.err(
        "share.create",
        vec![("name", t("z")), ("size", Value::Integer((-1).into()))],
        "invalid_argument",
    );
    d.err(
        "share.create",
        vec![("name", t("z")), ("size", n(MIB)), ("pool", t("nope"))],
        "not_found",
    );
    d.err("share.explode", vec![], "unsupported");

    let grown = d.ok(
        "share.resize",
        vec![("share", t("v")), ("size", n(32 * MIB))],
    );
    let id = field(sub(&grown, "share"), "id");
    assert_eq!(
        std::fs::metadata(volume(&xfs.mount.join("pool"), &id))
            .unwrap()
            .len(),
        32 * MIB,
        "the new size is visible in the file"
    );
    let del = d.ok(
        "share.delete",
        vec![("share", t("v")), ("recursive", Value::Bool(true))],
    );
    assert_eq!(get_u64(&del, "snapshots_deleted"), Some(1));
    d.err("share.show", vec![("share", t("v"))], "not_found");
    let pool = d.ok("pool.show", vec![("name", t("default"))]);
    assert_eq!(
        get_u64(&pool, "provisioned"),
        Some(0),
        "nothing is provisioned any more"
    );
    assert_eq!(get_u64(&pool, "shares"), Some(0));
}

#[test]
fn preallocation_beyond_the_filesystem_fails_cleanly_with_no_space() {
    let xfs = Xfs::new("nospace", 512 << 20);
    let d = Daemon::start(&Layout::on_xfs(&xfs, ""));
    let m = d.err(
        "share.create",
        vec![
            ("name", t("big")),
            ("size", n(2 << 30)),
            ("sparse", Value::Bool(false)),
        ],
        "no_space",
    );
    assert!(m.contains("big"), "{m}");
    assert_eq!(d.ok("share.list", vec![]), Value::Array(vec![]));
    let left = std::fs::read_dir(xfs.mount.join("pool/shares"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "nothing left behind");
    // A sparse share of the same size is fine: thin provisioning.
    create(&d, "thin", 2 << 30);
    let pre = d.ok(
        "share.create",
        vec![
            ("name", t("thick")),
            ("size", n(64 * MIB)),
            ("sparse", Value::Bool(false)),
        ],
    );
    let id = field(sub(&pre, "share"), "id");
    let blocks = std::fs::metadata(volume(&xfs.mount.join("pool"), &id)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        blocks.blocks() * 512 >= 64 * MIB,
        "preallocated blocks are reserved"
    );
}

#[test]
fn requests_pipeline_on_one_connection_and_replies_carry_their_ids() {
    let xfs = Xfs::new("pipeline", 512 << 20);
    let d = Daemon::start(&Layout::on_xfs(&xfs, ""));
    let mut c = d.client();
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = c
            .send(
                "share.create",
                shelf::client::args(vec![("name", t(&format!("p{i}"))), ("size", n(MIB))]),
            )
            .unwrap();
        ids.push(id);
    }
    ids.push(
        c.send(
            "share.show",
            shelf::client::args(vec![("share", t("missing"))]),
        )
        .unwrap(),
    );
    let mut seen = Vec::new();
    for _ in 0..ids.len() {
        let (id, result) = c.recv().unwrap().expect("a reply");
        let id = id.expect("every reply carries its id");
        if id == *ids.last().unwrap() {
            assert_eq!(result.unwrap_err().code, "not_found");
        } else {
            result.unwrap();
        }
        seen.push(id);
    }
    seen.sort();
    assert_eq!(seen, ids);
    let list = d.ok("share.list", vec![]);
    assert_eq!(list.as_array().unwrap().len(), 40);
}

#[test]
fn a_pool_that_cannot_reflink_copies_instead() {
    let base = scratch("copy");
    let pool = base.path().join("pool"); // /var/tmp is not an XFS with reflink here
    let layout = Layout::new(
        base.path(),
        &format!("[pools.plain]\npath = {:?}\n", pool.display().to_string()),
    );
    let d = Daemon::start(&layout);
    let p = d.ok("pool.show", vec![("name", t("plain"))]);
    let reflink = sub(&p, "reflink") == &Value::Bool(true);
    let id = create(&d, "v", 16 * MIB);
    let vol = volume(&pool, &id);
    let a = pattern(7, MIB as usize);
    write_at(&vol, 3 * MIB, &a);
    // Copies run as jobs (protocol 8.27): wait for them where the reply names one.
    let wait = |reply: &Value| {
        if let Some(job) = get_text(reply, "job") {
            assert!(eventually(60, || {
                field(&d.ok("job.show", vec![("job", t(job))]), "state") == "done"
            }));
        }
    };
    let r = d.ok("snapshot.create", vec![("share", t("v")), ("name", t("s"))]);
    assert_eq!(!reflink, get_text(&r, "job").is_some(), "{r:?}");
    wait(&r);
    write_at(&vol, 3 * MIB, &pattern(8, MIB as usize));
    let c = d.ok(
        "share.clone",
        vec![("snapshot", t("s")), ("share", t("v")), ("name", t("c"))],
    );
    wait(&c);
    let cvol = volume(&pool, &field(sub(&c, "share"), "id"));
    assert_eq!(read_at(&cvol, 3 * MIB, a.len()), a);
    assert_eq!(std::fs::metadata(&cvol).unwrap().len(), 16 * MIB);
    if !reflink {
        assert!(
            shelf::sys::fs::allocated(&cvol).unwrap() < 4 * MIB,
            "the copy keeps holes"
        );
    }
}

#[test]
fn the_socket_is_0660_and_a_stale_one_is_replaced() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let xfs = Xfs::new("socket", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "");
    let mut d = Daemon::start(&layout);
    let meta = std::fs::metadata(&layout.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    d.kill();
    assert!(layout.socket.exists(), "a crash leaves the socket file");
    d.restart();
    d.ok("hello", vec![]);
}

#[test]
fn sighup_reloads_the_config_and_adds_pools() {
    let xfs = Xfs::new("reload", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "");
    let d = Daemon::start(&layout);
    let extra = xfs.mount.join("second");
    let mut text = std::fs::read_to_string(&layout.config).unwrap();
    text.push_str(&format!(
        "[pools.second]\npath = {:?}\n",
        extra.display().to_string()
    ));
    std::fs::write(&layout.config, text).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let t0 = std::time::Instant::now();
    loop {
        let pools = d.ok("pool.list", vec![]);
        if pools.as_array().unwrap().len() == 2 {
            break;
        }
        assert!(t0.elapsed().as_secs() < 10, "the new pool never appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.ok(
        "share.create",
        vec![("name", t("v")), ("size", n(MIB)), ("pool", t("second"))],
    );
    // A broken config is refused and the daemon keeps running.
    std::fs::write(&layout.config, "this is = not toml [").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(std::time::Duration::from_millis(200));
    d.ok("hello", vec![]);
}

#[test]
fn check_config_validates_without_starting() {
    let base = scratch("check");
    let good = Layout::new(base.path(), "max_frame_size = 4096\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shelfd"))
        .args(["--config", good.config.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!good.state.exists(), "check-config touches nothing");
    let bad = base.path().join("bad.toml");
    std::fs::write(
        &bad,
        "state_dir = '/x'\nsocket = '/y'\nmax_frame_size = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shelfd"))
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_frame_size"));
}

#[test]
fn shelfctl_prints_tables_json_and_errors() {
    let xfs = Xfs::new("ctl", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "");
    let d = Daemon::start(&layout);
    let ctl = |args: &[&str]| d.shelfctl(args);
    let out = ctl(&["share", "create", "vol1", "4G", "--meta", "instance=web-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NAME") && text.contains("vol1") && text.contains("4G"),
        "{text}"
    );
    let out = ctl(&["--json", "share", "show", "vol1"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["size"], 4u64 << 30);
    assert_eq!(j["metadata"]["instance"], "web-1");
    let out = ctl(&["share", "resize", "vol1", "1G"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_argument"), "{err}");
    let out = ctl(&["snapshot", "create", "vol1", "s1"]);
    assert!(out.status.success());
    let out = ctl(&["tree"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("vol1") && text.contains("@s1"), "{text}");
    let out = ctl(&["call", "share.list", "{\"name\": \"vol1\"}"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j[0]["name"], "vol1");
    let _ = ClientError::Protocol(String::new());
}

#[test]
fn the_start_up_log_names_every_program_found_or_missing() {
    use std::os::unix::fs::PermissionsExt;
    let xfs = Xfs::new("programs", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "");
    let d = Daemon::start(&layout);
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("programs: found"))
        .unwrap_or_else(|| panic!("no start-up programs line in:\n{log}"));
    // Looked up here, independently of the daemon, in the documented order.
    let dirs = [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ];
    for (name, what) in shelf::sys::cmd::PROGRAMS {
        let here = dirs.iter().map(|d| format!("{d}/{name}")).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        let want = match here {
            Some(p) => format!("{name} ({p})"),
            None => format!("{name} (for {what})"),
        };
        assert!(line.contains(&want), "{want} not in: {line}");
    }
    d.ok("hello", vec![]);
}
