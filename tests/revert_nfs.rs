//! `share.revert` of a formatted (`filesystem`) share that is exported over NFS: the
//! export is of the share's mounted filesystem, so the revert withdraws it before the
//! unmount and adds it back after the mount. Checked against a real nfs-ganesha read by a
//! real NFS client (libnfs's nfs-cat / nfs-ls) and against the kernel's exportfs.

mod common;

use std::path::{Path, PathBuf};

use ciborium::Value;
use common::*;
use shelf::client::get;

const MIB: u64 = 1 << 20;

fn mounted_at(p: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    shelf::pool::format::parse_mountinfo(&text)
        .into_iter()
        .any(|m| m.target == p)
}

/// What must go in order: ganesha (which holds the exported filesystems open) stops
/// before the share mounts are unmounted, or their unmount (and the pool's) fails.
struct Served {
    g: Ganesha,
    _mounts: MountsUnder,
}

/// A formatted share `data` with `hello.txt` = "before", snapshot `s0`, then
/// `hello.txt` = "after" and `later.txt` written. Returns (share id, mount point).
fn formatted_with_snapshot(d: &Daemon, mounts: &Path) -> (String, PathBuf) {
    let id = create_formatted(d, "data", 320 * MIB, "xfs");
    let mp = mounts.join(&id);
    assert!(mounted_at(&mp), "mounted after create");
    std::fs::write(mp.join("hello.txt"), b"before").unwrap();
    d.ok(
        "snapshot.create",
        vec![("share", t("data")), ("name", t("s0"))],
    );
    std::fs::write(mp.join("hello.txt"), b"after").unwrap();
    std::fs::write(mp.join("later.txt"), b"x").unwrap();
    (id, mp)
}

/// A node whose NFS exports go to the kernel's exportfs (a private exports file): its
/// scratch XFS, layout and share mounts. Fields drop in order: the mounts first.
struct KernelNode {
    _mounts: MountsUnder,
    layout: Layout,
    mounts: PathBuf,
    _exports: ExportsFile,
    _xfs: Xfs,
}

impl KernelNode {
    fn new(name: &str) -> KernelNode {
        let xfs = Xfs::new(name, 2 << 30);
        let exports = ExportsFile::new(name);
        let layout = Layout::on_xfs(
            &xfs,
            &format!("reconcile_interval = 0\n{}", exports.config()),
        );
        let mounts = layout.state.join("mounts");
        KernelNode {
            _mounts: MountsUnder(mounts.clone()),
            layout,
            mounts,
            _exports: exports,
            _xfs: xfs,
        }
    }
}

/// Whether the kernel exports `mp` to 127.0.0.1.
fn kernel_exports(mp: &Path) -> bool {
    exportfs_v()
        .iter()
        .any(|(p, c, _)| p == &mp.display().to_string() && c == "127.0.0.1")
}

/// Delete share `data` with its snapshots, exports and all.
fn delete_data(d: &Daemon) {
    d.ok(
        "share.delete",
        vec![
            ("share", t("data")),
            ("recursive", Value::Bool(true)),
            ("force", Value::Bool(true)),
        ],
    );
}

fn nfs_export_args(driver: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("share", t("data")),
        ("protocol", t("nfs")),
        ("driver", t(driver)),
        ("clients", Value::Array(vec![t("127.0.0.1")])),
        ("root_squash", Value::Bool(false)),
    ]
}

fn revert_args() -> Vec<(&'static str, Value)> {
    vec![("share", t("data")), ("snapshot", t("s0"))]
}

/// Read `path` through ganesha, waiting for it to serve the export.
fn nfs_read(g: &Ganesha, path: &str) -> Option<Vec<u8>> {
    let url = g.url(path);
    let mut got = None;
    eventually(10, || {
        let out = std::process::Command::new("nfs-cat")
            .arg(&url)
            .output()
            .unwrap();
        if out.status.success() {
            got = Some(out.stdout);
        }
        got.is_some()
    });
    got
}

#[test]
fn reverting_a_formatted_share_keeps_its_ganesha_export_serving_the_snapshot() {
    let xfs = Xfs::new("revert-nfs-g", 2 << 30);
    let g = Ganesha::start();
    let layout = Layout::on_xfs(&xfs, &format!("reconcile_interval = 0\n{}", g.config()));
    let mounts = layout.state.join("mounts");
    let s = Served {
        g,
        _mounts: MountsUnder(mounts.clone()),
    };
    let d = Daemon::start(&layout);
    let (id, mp) = formatted_with_snapshot(&d, &mounts);
    d.ok("export.create", nfs_export_args("ganesha"));
    let file = format!("/shelf/{id}/hello.txt");
    let served = nfs_read(&s.g, &file);
    assert_eq!(served.as_deref(), Some(&b"after"[..]), "served before");

    let r = d.ok("share.revert", revert_args());
    assert!(get(&r, "warnings").is_none(), "{r:?}");
    assert!(mounted_at(&mp), "mounted again after the revert");
    assert_eq!(std::fs::read(mp.join("hello.txt")).unwrap(), b"before");
    assert!(!mp.join("later.txt").exists());
    // Still exported, of the mount, and served by the same ganesha: the client reads the
    // snapshot's content, not the old filesystem's.
    let conf = std::fs::read_to_string(&s.g.exports).unwrap();
    assert!(
        conf.contains(&format!("Path = \"{}\"", mp.display())),
        "{conf}"
    );
    let listed = format!("{:?}", d.ok("export.list", vec![]));
    assert!(listed.contains(&mp.display().to_string()), "{listed}");
    let served = nfs_read(&s.g, &file);
    assert_eq!(
        served.as_deref(),
        Some(&b"before"[..]),
        "read through NFS after the revert; ganesha log:\n{}",
        std::fs::read_to_string(&s.g.log).unwrap_or_default()
    );
    let (ok, out, err) = try_run(&["nfs-ls", &s.g.url(&format!("/shelf/{id}/"))]);
    assert!(ok && !out.contains("later.txt"), "nfs-ls: {out}{err}");
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
    delete_data(&d);
}

#[test]
fn reverting_a_formatted_share_keeps_its_kernel_nfs_export() {
    let node = KernelNode::new("revert-nfs-k");
    let d = Daemon::start(&node.layout);
    let (_, mp) = formatted_with_snapshot(&d, &node.mounts);
    d.ok("export.create", nfs_export_args("kernel"));
    let exported = || kernel_exports(&mp);
    assert!(exported(), "{:?}", exportfs_v());

    let r = d.ok("share.revert", revert_args());
    assert!(get(&r, "warnings").is_none(), "{r:?}");
    assert!(mounted_at(&mp), "mounted again after the revert");
    assert_eq!(std::fs::read(mp.join("hello.txt")).unwrap(), b"before");
    assert!(exported(), "{:?}", exportfs_v());
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
    delete_data(&d);
    assert!(!exported());
}

#[test]
fn a_crash_after_the_export_is_withdrawn_is_repaired_at_start_up() {
    let node = KernelNode::new("revert-nfs-crash");
    let mut d = Daemon::start(&node.layout);
    let (_, mp) = formatted_with_snapshot(&d, &node.mounts);
    d.ok("export.create", nfs_export_args("kernel"));
    let exported = || kernel_exports(&mp);
    assert!(exported(), "{:?}", exportfs_v());
    d.stop();
    d.restart_with_env(&[("SHELF_FAILPOINT", "share.revert.after_withdraw")]);
    let r = d.call("share.revert", revert_args());
    assert!(r.is_err(), "answered {r:?} instead of crashing");
    assert!(!d.wait_exit().success(), "shelfd did not abort");
    // The crash left the export withdrawn (the filesystem still mounted, the volume old).
    assert!(!exported(), "{:?}", exportfs_v());
    d.restart();
    // Recovery discarded the staged volume; the start-up reconcile added the export back.
    assert!(
        exported(),
        "export back after the restart: {:?}",
        exportfs_v()
    );
    assert!(mounted_at(&mp));
    assert_eq!(std::fs::read(mp.join("hello.txt")).unwrap(), b"after");
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
    // And the revert, retried, goes through.
    let r = d.ok("share.revert", revert_args());
    assert!(get(&r, "warnings").is_none(), "{r:?}");
    assert_eq!(std::fs::read(mp.join("hello.txt")).unwrap(), b"before");
    assert!(exported(), "{:?}", exportfs_v());
    delete_data(&d);
}
