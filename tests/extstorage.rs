//! The Ganeti ExtStorage provider, run the way Ganeti runs it: the installed scripts are
//! executed with a cleared environment holding only what Ganeti's `_ExtStorageEnvironment`
//! sets (VOL_*, EXTP_*) plus PATH, from the provider directory, against a real shelfd on a
//! scratch XFS; each run's exit code, stdout and stderr are checked, then the state it left
//! (shares, metadata, identity xattrs, loop devices, iSCSI logins).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ciborium::Value;
use common::*;
use shelf::client::{get, get_u64};

const MIB: u64 = 1 << 20;
const VOL: &str = "7f1c52a4-3b1e-4c55-9d0e-2a1b6c8d9e0f.ext.disk0";
const INIT: &str = "iqn.2026-11.org.example:ganeti-kvm";

/// What one script run gave.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "script failed: {self:?}");
        assert_eq!(
            self.stderr, "",
            "a successful script prints nothing on stderr"
        );
        self
    }

    /// Failed with exit 1 and exactly one line on stderr naming the action; returns it.
    fn failed(&self, action: &str) -> String {
        assert_eq!(self.code, Some(1), "expected a failure: {self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:?}");
        let prefix = if action.is_empty() {
            "shelf extstorage:".to_string()
        } else {
            format!("shelf extstorage {action}")
        };
        assert!(lines[0].starts_with(&prefix), "{self:?}");
        lines[0].to_string()
    }
}

/// Run `dir/action` as Ganeti does: only these variables (and PATH), cwd = the provider
/// directory. A script that does not finish within 60 s is a hang.
fn run(dir: &Path, action: &str, vars: &[(&str, &str)]) -> Out {
    let mut child = Command::new(dir.join(action))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(vars.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {action}: {e}"));
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{action} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Loop devices whose backing file is under `root`.
fn loops_under(root: &Path) -> Vec<(String, String)> {
    let out = sh(&["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"]);
    if out.trim().is_empty() {
        return vec![];
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["loopdevices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| {
                    let back = d["back-file"].as_str()?.to_string();
                    back.starts_with(root.to_str().unwrap())
                        .then(|| (d["name"].as_str().unwrap_or("").to_string(), back))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Detaches, on drop, every loop device backed by a file under the pool (even when the
/// test failed), so the scratch XFS can be unmounted.
struct LoopGuard(PathBuf);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        for (dev, _) in loops_under(&self.0) {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
    }
}

/// A shelfd on a scratch XFS with the provider installed; fields drop in declaration
/// order: loop devices first, then the provider directory, the daemon, the XFS.
struct Setup {
    _loops: LoopGuard,
    provider: tempfile::TempDir,
    d: Daemon,
    xfs: Xfs,
}

impl Setup {
    fn new(tag: &str, extra: &str) -> Setup {
        let xfs = Xfs::new(tag, 1 << 30);
        let layout = Layout::on_xfs(&xfs, &format!("reconcile_interval = 0\n{extra}"));
        let d = Daemon::start(&layout);
        let provider = scratch("provider");
        let dir = provider.path().join("shelf");
        let (ok, out, err) = try_run(&[
            env!("CARGO_BIN_EXE_shelfctl"),
            "--socket",
            d.socket.to_str().unwrap(),
            "extstorage",
            "install",
            dir.to_str().unwrap(),
            "--shelfctl",
            env!("CARGO_BIN_EXE_shelfctl"),
        ]);
        assert!(ok, "install: {out}{err}");
        let loops = LoopGuard(xfs.mount.clone());
        Setup {
            xfs,
            d,
            provider,
            _loops: loops,
        }
    }

    fn dir(&self) -> PathBuf {
        self.provider.path().join("shelf")
    }

    fn pool(&self) -> PathBuf {
        self.xfs.mount.join("pool")
    }

    fn share(&self, name: &str) -> Value {
        self.d.ok("share.show", vec![("share", t(name))])
    }
}

fn meta<'a>(share: &'a Value, key: &str) -> Option<&'a str> {
    get(sub(share, "metadata"), key).and_then(Value::as_text)
}

fn identity_metadata(file: &Path) -> serde_json::Value {
    let raw = xattr::get(file, "trusted.shelf.metadata").unwrap().unwrap();
    serde_json::from_slice(&raw).unwrap()
}

fn size_of_block_device(dev: &str) -> u64 {
    sh(&["blockdev", "--getsize64", dev])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_installed_provider_has_every_script_and_its_parameters() {
    let s = Setup::new("es-install", "");
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot", "open",
        "close",
    ] {
        let m = std::fs::metadata(s.dir().join(f)).unwrap();
        assert!(
            m.is_file() && m.permissions().mode() & 0o111 == 0o111,
            "{f}"
        );
    }
    let params = std::fs::read_to_string(s.dir().join("parameters.list")).unwrap();
    let names: Vec<&str> = params
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["pool", "socket", "initiator", "access"]);
    // `-h` prints the usage and succeeds, as the man page asks.
    let out = Command::new(s.dir().join("verify"))
        .arg("-h")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage"));
}

#[test]
fn every_action_runs_from_the_environment_and_leaves_the_expected_state() {
    let s = Setup::new("es-life", "");
    let dir = s.dir();
    let create = [
        ("VOL_NAME", VOL),
        ("VOL_SIZE", "64"),
        ("VOL_CNAME", "web-1-data"),
        ("VOL_UUID", "0d9e8f7a-1111-2222-3333-444455556666"),
    ];
    assert_eq!(run(&dir, "create", &create).ok().stdout, "");
    let share = s.share(VOL);
    assert_eq!(get_u64(&share, "size"), Some(64 * MIB));
    assert_eq!(meta(&share, "ganeti.cname"), Some("web-1-data"));
    assert_eq!(
        meta(&share, "ganeti.uuid"),
        Some("0d9e8f7a-1111-2222-3333-444455556666")
    );
    assert_eq!(meta(&share, "ganeti.name"), Some(VOL));
    // A retried create is answered with the same volume.
    run(&dir, "create", &create).ok();
    let file = volume(&s.pool(), &field(&share, "id"));

    // attach twice: the same loop device, one line, a block device over the volume file.
    let first = run(&dir, "attach", &[("VOL_NAME", VOL)])
        .ok()
        .stdout
        .clone();
    let second = run(&dir, "attach", &[("VOL_NAME", VOL)])
        .ok()
        .stdout
        .clone();
    assert_eq!(first, second);
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 1, "no iSCSI export, no URI line: {first:?}");
    let dev = lines[0].to_string();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&dev)
        .unwrap()
        .file_type()
        .is_block_device());
    assert_eq!(loops_under(&s.xfs.mount).len(), 1);
    assert_eq!(size_of_block_device(&dev), 64 * MIB);
    let data = pattern(9, MIB as usize);
    let src = s.xfs.base().join("pattern");
    std::fs::write(&src, &data).unwrap();
    sh(&[
        "dd",
        &format!("if={}", src.display()),
        &format!("of={dev}"),
        "bs=1M",
        "seek=3",
        "oflag=direct",
        "conv=fsync",
        "status=none",
    ]);
    assert_eq!(
        read_at(&file, 3 * MIB, data.len()),
        data,
        "written through the loop device"
    );

    // grow: the share and the attached loop device see the new size.
    run(
        &dir,
        "grow",
        &[
            ("VOL_NAME", VOL),
            ("VOL_SIZE", "64"),
            ("VOL_NEW_SIZE", "128"),
        ],
    )
    .ok();
    assert_eq!(get_u64(&s.share(VOL), "size"), Some(128 * MIB));
    assert_eq!(size_of_block_device(&dev), 128 * MIB);

    // setinfo: stored in the share's metadata and stamped on the volume.
    run(
        &dir,
        "setinfo",
        &[
            ("VOL_NAME", VOL),
            ("VOL_METADATA", "originstname+web-1.example.com"),
        ],
    )
    .ok();
    let share = s.share(VOL);
    assert_eq!(
        meta(&share, "ganeti.metadata"),
        Some("originstname+web-1.example.com")
    );
    assert_eq!(meta(&share, "ganeti.cname"), Some("web-1-data"), "kept");
    let stamped = identity_metadata(&file);
    assert_eq!(stamped["ganeti.metadata"], "originstname+web-1.example.com");
    assert_eq!(stamped["ganeti.cname"], "web-1-data");

    // open, close, verify.
    run(
        &dir,
        "open",
        &[("VOL_NAME", VOL), ("VOL_OPEN_EXCLUSIVE", "True")],
    )
    .ok();
    run(&dir, "close", &[("VOL_NAME", VOL)]).ok();
    run(
        &dir,
        "verify",
        &[("VOL_NAME", VOL), ("EXTP_POOL", "default")],
    )
    .ok();
    let bad = run(&dir, "verify", &[("VOL_NAME", VOL), ("EXTP_COLOUR", "red")]);
    assert!(bad.failed("verify").contains("EXTP_COLOUR"));

    // snapshot as gnt-backup export takes it, then attach (read-only), detach, remove it.
    let snap = format!("{VOL}.snap");
    run(
        &dir,
        "snapshot",
        &[
            ("VOL_NAME", VOL),
            ("VOL_SNAPSHOT_NAME", &snap),
            ("VOL_SNAPSHOT_SIZE", "128"),
        ],
    )
    .ok();
    let snaps = s.d.ok("snapshot.list", vec![("share", t(VOL))]);
    assert_eq!(field(&snaps.as_array().unwrap()[0], "name"), snap);
    let sdev = run(&dir, "attach", &[("VOL_NAME", &snap)])
        .ok()
        .stdout
        .clone();
    let sdev = sdev.trim().to_string();
    assert_ne!(sdev, dev);
    assert_eq!(
        read_at(Path::new(&sdev), 3 * MIB, data.len()),
        data,
        "the snapshot holds the data"
    );
    run(&dir, "detach", &[("VOL_NAME", &snap)]).ok();
    run(&dir, "remove", &[("VOL_NAME", &snap)]).ok();
    assert!(s
        .d
        .ok("snapshot.list", vec![])
        .as_array()
        .unwrap()
        .is_empty());

    // detach twice: both succeed, the loop device is gone; the volume stays.
    run(&dir, "detach", &[("VOL_NAME", VOL)]).ok();
    run(&dir, "detach", &[("VOL_NAME", VOL)]).ok();
    assert!(loops_under(&s.xfs.mount).is_empty());
    assert_eq!(read_at(&file, 3 * MIB, data.len()), data);

    // remove (detaching first if Ganeti did not), twice.
    run(&dir, "attach", &[("VOL_NAME", VOL)]).ok();
    run(&dir, "remove", &[("VOL_NAME", VOL)]).ok();
    assert!(loops_under(&s.xfs.mount).is_empty());
    s.d.err("share.show", vec![("share", t(VOL))], "not_found");
    assert!(!file.exists());
    run(&dir, "remove", &[("VOL_NAME", VOL)]).ok();
}

#[test]
fn failures_exit_1_with_one_line_on_stderr() {
    let s = Setup::new("es-fail", "");
    let dir = s.dir();
    let shelfctl = env!("CARGO_BIN_EXE_shelfctl");
    let out = Command::new(shelfctl)
        .env_clear()
        .env("VOL_NAME", VOL)
        .args(["extstorage", "frobnicate"])
        .output()
        .unwrap();
    let o = Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(o.failed("").contains("unknown action \"frobnicate\""));

    let m = run(&dir, "create", &[("VOL_SIZE", "64")]).failed("create");
    assert!(m.contains("VOL_NAME is not set"), "{m}");
    let m = run(&dir, "create", &[("VOL_NAME", VOL)]).failed("create");
    assert!(m.contains("VOL_SIZE is not set") && m.contains(VOL), "{m}");
    for bad in ["abc", "0", "-1", "1.5"] {
        let m = run(&dir, "create", &[("VOL_NAME", VOL), ("VOL_SIZE", bad)]).failed("create");
        assert!(m.contains("VOL_SIZE"), "{m}");
    }
    let m = run(&dir, "attach", &[("VOL_NAME", VOL)]).failed("attach");
    assert!(m.contains("no share"), "{m}");
    let gone = s.xfs.base().join("no-such.sock");
    let m = run(
        &dir,
        "create",
        &[
            ("VOL_NAME", VOL),
            ("VOL_SIZE", "64"),
            ("EXTP_SOCKET", gone.to_str().unwrap()),
        ],
    )
    .failed("create");
    assert!(m.contains("cannot talk to shelfd"), "{m}");
    let m = run(
        &dir,
        "create",
        &[("VOL_NAME", VOL), ("VOL_SIZE", "64"), ("EXTP_POOL", "nope")],
    )
    .failed("create");
    assert!(m.contains("not_found"), "{m}");
    run(&dir, "create", &[("VOL_NAME", VOL), ("VOL_SIZE", "64")]).ok();
    let m = run(&dir, "create", &[("VOL_NAME", VOL), ("VOL_SIZE", "32")]).failed("create");
    assert!(m.contains("already_exists"), "{m}");
    let m = run(
        &dir,
        "grow",
        &[
            ("VOL_NAME", VOL),
            ("VOL_SIZE", "64"),
            ("VOL_NEW_SIZE", "32"),
        ],
    )
    .failed("grow");
    assert!(m.contains("only grows"), "{m}");
    let m = run(&dir, "setinfo", &[("VOL_NAME", VOL)]).failed("setinfo");
    assert!(m.contains("VOL_METADATA"), "{m}");
    let m = run(
        &dir,
        "attach",
        &[("VOL_NAME", VOL), ("EXTP_ACCESS", "userspace")],
    )
    .failed("attach");
    assert!(m.contains("EXTP_INITIATOR"), "{m}");
    // An argument the interface does not define is refused.
    let out = Command::new(dir.join("attach"))
        .arg("extra")
        .env_clear()
        .env("VOL_NAME", VOL)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_instance_mapping_survives_a_lost_database() {
    let mut s = Setup::new("es-rebuild", "");
    let dir = s.dir();
    run(
        &dir,
        "create",
        &[
            ("VOL_NAME", VOL),
            ("VOL_SIZE", "16"),
            ("VOL_CNAME", "db-disk"),
        ],
    )
    .ok();
    run(
        &dir,
        "setinfo",
        &[("VOL_NAME", VOL), ("VOL_METADATA", "originstname+db-1")],
    )
    .ok();
    s.d.stop();
    s.d.lose_db(Some(b"lost"));
    let (ok, text) = s.d.try_rebuild(&[]);
    assert!(ok, "{text}");
    s.d.restart();
    let share = s.share(VOL);
    assert_eq!(meta(&share, "ganeti.cname"), Some("db-disk"));
    assert_eq!(meta(&share, "ganeti.metadata"), Some("originstname+db-1"));
    // Ganeti (or an operator with a rebuilt Ganeti config) finds the disk again.
    let dev = run(&dir, "attach", &[("VOL_NAME", VOL)])
        .ok()
        .stdout
        .clone();
    assert!(dev.starts_with("/dev/loop"), "{dev}");
    run(&dir, "detach", &[("VOL_NAME", VOL)]).ok();
}

#[test]
fn a_crash_before_set_metadata_commits_is_undone_at_start_up() {
    let mut s = Setup::new("es-crash", "");
    let r = s.d.ok(
        "share.create",
        vec![
            ("name", t("v")),
            ("size", n(4 * MIB)),
            ("metadata", Value::Map(vec![(t("a"), t("1"))])),
        ],
    );
    let file = volume(&s.pool(), &field(sub(&r, "share"), "id"));
    s.d.stop();
    s.d.restart_with_env(&[("SHELF_FAILPOINT", "share.set_metadata.after_stamp")]);
    let args = vec![
        ("share", t("v")),
        ("metadata", Value::Map(vec![(t("a"), t("2"))])),
    ];
    assert!(s.d.call("share.set_metadata", args).is_err());
    assert!(!s.d.wait_exit().success());
    assert_eq!(
        identity_metadata(&file)["a"],
        "2",
        "stamped before the crash"
    );
    s.d.restart();
    assert_eq!(meta(&s.share("v"), "a"), Some("1"), "never acknowledged");
    assert_eq!(identity_metadata(&file)["a"], "1", "the old stamp is back");
    let v = s.d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
    // And the change itself works, with removal, and is idempotent.
    let args = |m: Vec<(Value, Value)>| {
        vec![
            ("share", t("v")),
            ("metadata", Value::Map(m)),
            ("remove", Value::Array(vec![t("a")])),
        ]
    };
    let r = s.d.ok("share.set_metadata", args(vec![(t("b"), t("x"))]));
    assert_eq!(get(&r, "changed"), Some(&Value::Bool(true)));
    assert_eq!(meta(&s.share("v"), "a"), None);
    let r = s.d.ok("share.set_metadata", args(vec![(t("b"), t("x"))]));
    assert_eq!(get(&r, "changed"), Some(&Value::Bool(false)));
    assert_eq!(identity_metadata(&file), serde_json::json!({"b": "x"}));
    let big = "x".repeat(5000);
    s.d.err(
        "share.set_metadata",
        vec![
            ("share", t("v")),
            ("metadata", Value::Map(vec![(t("b"), t(&big))])),
        ],
        "invalid_argument",
    );
}

#[test]
fn attach_gives_kvm_an_iscsi_uri_when_the_share_is_exported_over_iscsi() {
    let tgtd = Tgtd::start();
    let s = Setup::new("es-iscsi", &tgtd.config());
    let dir = s.dir();
    run(&dir, "create", &[("VOL_NAME", VOL), ("VOL_SIZE", "16")]).ok();
    s.d.ok(
        "export.create",
        vec![("share", t(VOL)), ("protocol", t("iscsi"))],
    );
    let vars = [("VOL_NAME", VOL), ("EXTP_INITIATOR", INIT)];
    let out = run(&dir, "attach", &vars).ok().stdout.clone();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("/dev/loop"));
    let uri = lines[1]
        .strip_prefix("kvm:")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(uri.starts_with("iscsi://"), "{uri}");
    // The URI logs in as KVM would: portal, IQN, LUN and CHAP credentials are right.
    if let Err(e) = common::iscsi::inquiry(INIT, uri) {
        panic!("iscsi-inq {uri}: {e}");
    }
    // Idempotent: the same two lines again.
    assert_eq!(run(&dir, "attach", &vars).ok().stdout, out);
    let att = s.d.ok("attachment.list", vec![("share", t(VOL))]);
    assert_eq!(att.as_array().unwrap().len(), 1);
    run(&dir, "detach", &vars).ok();
    run(&dir, "detach", &vars).ok();
    let att = s.d.ok("attachment.list", vec![("share", t(VOL))]);
    assert!(att.as_array().unwrap().is_empty());
    assert!(loops_under(&s.xfs.mount).is_empty());
    run(&dir, "remove", &[("VOL_NAME", VOL)]).ok();
}
