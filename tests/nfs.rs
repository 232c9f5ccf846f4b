//! NFS exports: the kernel driver checked through `exportfs -v` (no kernel nfsd runs on
//! this machine, but exportfs parses and records every export), and the ganesha driver
//! served by a real ganesha.nfsd and read and written by libnfs's client tools.

mod common;

use ciborium::Value;
use common::*;

const MIB: u64 = 1 << 20;

fn nfs_connector(ip: &str, host: &str) -> Value {
    Value::Map(vec![(t("host"), t(host)), (t("ip"), t(ip))])
}

fn clients(list: &[&str]) -> Value {
    Value::Array(list.iter().map(|c| t(c)).collect())
}

fn live_for(path: &str) -> Vec<(String, String)> {
    exportfs_v()
        .into_iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, c, o)| (c, o))
        .collect()
}

/// Fields drop in order: daemon, exports file, filesystem.
struct Kernel {
    d: Daemon,
    ef: ExportsFile,
    xfs: Xfs,
}

fn kernel(tag: &str) -> Kernel {
    let xfs = Xfs::new(tag, 1 << 30);
    let ef = ExportsFile::new(tag);
    let d = Daemon::start(&Layout::on_xfs(
        &xfs,
        &format!("reconcile_interval = 0\n{}", ef.config()),
    ));
    Kernel { d, ef, xfs }
}

#[test]
fn kernel_exports_follow_every_change_and_survive_exportfs_ra() {
    let k = kernel("knfs");
    let d = &k.d;
    let made = d.ok(
        "share.create",
        vec![("name", t("n1")), ("size", n(8 * MIB))],
    );
    let id = field(sub(&made, "share"), "id");
    let path = k
        .xfs
        .mount
        .join("pool/shares")
        .join(&id)
        .display()
        .to_string();

    let m = d.err(
        "export.create",
        vec![("share", t("n1")), ("protocol", t("nfs"))],
        "invalid_argument",
    );
    assert!(
        m.contains("clients"),
        "no export to the world by default: {m}"
    );

    let e = d.ok(
        "export.create",
        vec![
            ("share", t("n1")),
            ("protocol", t("nfs")),
            ("clients", clients(&["127.0.0.1"])),
        ],
    );
    let fsid = shelf::client::get_u64(sub(&e, "export"), "fsid").unwrap();
    let live = live_for(&path);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].0, "127.0.0.1");
    for opt in [
        "rw",
        "root_squash",
        "no_subtree_check",
        "sync",
        &format!("fsid={fsid}"),
    ] {
        assert!(
            live[0].1.split(',').any(|o| o == opt),
            "{opt} missing in {}",
            live[0].1
        );
    }
    let file = std::fs::read_to_string(&k.ef.path).unwrap();
    assert!(
        file.contains(&format!(
            "{path} 127.0.0.1(rw,sync,root_squash,no_subtree_check,fsid={fsid})"
        )),
        "{file}"
    );

    // Attach adds exactly this host; connection_info is Cinder's NFS shape.
    let r = d.ok(
        "share.attach",
        vec![
            ("share", t("n1")),
            ("protocol", t("nfs")),
            ("connector", nfs_connector("192.0.2.10", "compute-9")),
        ],
    );
    let info = sub(&r, "connection_info");
    assert_eq!(field(info, "driver_volume_type"), "nfs");
    assert_eq!(
        field(sub(info, "data"), "export"),
        format!("127.0.0.1:{path}")
    );
    assert_eq!(field(sub(info, "data"), "name"), "volume");
    let live = live_for(&path);
    assert!(live.iter().any(|(c, _)| c == "192.0.2.10"), "{live:?}");

    // Someone else's exportfs -ra keeps them: the file is the truth.
    sh(&["exportfs", "-ra"]);
    assert_eq!(live_for(&path).len(), 2);

    // Removed behind our back: reconcile puts it back and says so. Another test's
    // `exportfs -r` (they share the kernel's table) may put it back first; then try again.
    let mut seen_missing = false;
    for _ in 0..10 {
        sh(&["exportfs", "-u", &format!("192.0.2.10:{path}")]);
        let rep = d.ok("reconcile", vec![]);
        seen_missing = sub(&rep, "findings")
            .as_array()
            .unwrap()
            .iter()
            .any(|f| field(f, "kind") == "missing");
        assert_eq!(live_for(&path).len(), 2, "{rep:?}");
        if seen_missing {
            break;
        }
    }
    assert!(seen_missing, "reconcile never reported the removed export");

    // Detach removes exactly that host.
    d.ok(
        "share.detach",
        vec![
            ("share", t("n1")),
            ("connector", nfs_connector("192.0.2.10", "compute-9")),
        ],
    );
    let live = live_for(&path);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].0, "127.0.0.1");

    // Delete with force takes the export away.
    d.err("share.delete", vec![("share", t("n1"))], "has_dependents");
    d.ok(
        "share.delete",
        vec![("share", t("n1")), ("force", Value::Bool(true))],
    );
    assert!(live_for(&path).is_empty());
    assert!(!std::fs::read_to_string(&k.ef.path).unwrap().contains(&path));
}

#[test]
fn injected_clients_and_options_are_refused() {
    let k = kernel("kinject");
    let d = &k.d;
    d.ok("share.create", vec![("name", t("v")), ("size", n(MIB))]);
    // Only this test's filesystem counts: other tests share the kernel's export table.
    let mine = k.xfs.mount.display().to_string();
    let ours = || {
        exportfs_v()
            .into_iter()
            .filter(|(p, _, _)| p.starts_with(&mine))
            .count()
    };
    assert_eq!(ours(), 0);
    for bad in [
        "127.0.0.1(rw,no_root_squash)",
        "*(rw)",
        "a b",
        "x,y",
        "host\n/ *(rw,no_root_squash)",
        "\"quoted\"",
        "-o",
        "#comment",
        "",
    ] {
        d.err(
            "export.create",
            vec![
                ("share", t("v")),
                ("protocol", t("nfs")),
                ("clients", clients(&[bad])),
            ],
            "invalid_argument",
        );
    }
    d.err(
        "share.attach",
        vec![
            ("share", t("v")),
            ("protocol", t("nfs")),
            ("connector", Value::Map(vec![(t("host"), t("evil(rw)"))])),
        ],
        "invalid_argument",
    );
    d.err(
        "share.attach",
        vec![
            ("share", t("v")),
            ("protocol", t("nfs")),
            ("connector", nfs_connector("1.2.3.4 *(rw)", "h")),
        ],
        "invalid_argument",
    );
    d.err(
        "export.create",
        vec![
            ("share", t("v")),
            ("protocol", t("nfs")),
            ("clients", clients(&["10.0.0.0/8"])),
            ("chap", Value::Bool(true)),
        ],
        "invalid_argument",
    );
    assert_eq!(ours(), 0, "nothing was exported");
    assert!(
        !k.ef.path.exists()
            || !std::fs::read_to_string(&k.ef.path)
                .unwrap()
                .contains("shares/")
    );
}

#[test]
fn a_burst_of_exports_is_coalesced() {
    let k = kernel("kburst");
    let d = &k.d;
    let mut c = d.client();
    const N: usize = 120;
    for i in 0..N {
        c.send(
            "share.create",
            shelf::client::args(vec![("name", t(&format!("b{i}"))), ("size", n(MIB))]),
        )
        .unwrap();
    }
    for _ in 0..N {
        c.recv().unwrap().unwrap().1.unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            c.send(
                "export.create",
                shelf::client::args(vec![
                    ("share", t(&format!("b{i}"))),
                    ("protocol", t("nfs")),
                    ("clients", clients(&["127.0.0.1"])),
                ]),
            )
            .unwrap(),
        );
    }
    for _ in 0..N {
        let (_, r) = c.recv().unwrap().unwrap();
        r.unwrap();
    }
    let ours = exportfs_v()
        .into_iter()
        .filter(|(p, _, _)| p.starts_with(&k.xfs.mount.display().to_string()))
        .count();
    assert_eq!(ours, N);
    let flushes = d.log_text().matches("ran exportfs -r").count();
    assert!(flushes < N / 3, "{N} exports cost {flushes} exportfs runs");
    eprintln!("{N} NFS exports created with {flushes} exportfs -r runs");
}

#[test]
fn ganesha_serves_exports_to_a_real_nfs_client_and_reloads_without_restart() {
    let xfs = Xfs::new("ganesha", 1 << 30);
    let g = Ganesha::start();
    let d = Daemon::start(&Layout::on_xfs(
        &xfs,
        &format!("reconcile_interval = 0\n{}", g.config()),
    ));
    let hello = d.ok("hello", vec![]);
    assert_eq!(field(sub(&hello, "drivers"), "ganesha"), "usable");
    let made = d.ok("share.create", vec![("name", t("g1")), ("size", n(MIB))]);
    let id = field(sub(&made, "share"), "id");
    let dir = xfs.mount.join("pool/shares").join(&id);
    let content = pattern(9, 256 * 1024);
    write_at(&dir.join("volume"), 0, &content);
    let ganesha_pid = std::fs::read_to_string(&g.pidfile).unwrap();

    // root-owned 0660 volume files need no_root_squash for a root client.
    d.ok(
        "export.create",
        vec![
            ("share", t("g1")),
            ("protocol", t("nfs")),
            ("driver", t("ganesha")),
            ("clients", clients(&["127.0.0.1"])),
            ("root_squash", Value::Bool(false)),
        ],
    );
    let conf = std::fs::read_to_string(&g.exports).unwrap();
    assert!(
        conf.contains(&format!("Path = \"{}\"", dir.display())),
        "{conf}"
    );
    let vol_url = g.url(&format!("/shelf/{id}/volume"));
    let mut got = Vec::new();
    let served = eventually(10, || {
        let out = std::process::Command::new("nfs-cat")
            .arg(&vol_url)
            .output()
            .unwrap();
        got = out.stdout;
        out.status.success() && got.len() as u64 == MIB
    });
    assert!(
        served,
        "nfs-cat never read the volume: {}",
        std::fs::read_to_string(&g.log).unwrap_or_default()
    );
    assert_eq!(
        &got[..content.len()],
        &content[..],
        "data read through NFS is the data in the file"
    );

    // The attach contract's `export` is what an NFSv4 client mounts: ganesha's pseudo
    // path, not the directory's real path (which ganesha answers with NFS4ERR_NOENT).
    let attached = d.ok(
        "share.attach",
        vec![
            ("share", t("g1")),
            ("protocol", t("nfs")),
            (
                "connector",
                Value::Map(vec![(t("host"), t("compute-1")), (t("ip"), t("127.0.0.1"))]),
            ),
        ],
    );
    let export = field(sub(sub(&attached, "connection_info"), "data"), "export");
    assert_eq!(export, format!("127.0.0.1:/shelf/{id}"));
    let (ok, out, err) = try_run(&["nfs-ls", &g.url(&format!("/shelf/{id}/"))]);
    assert!(ok && out.contains("volume"), "nfs-ls {export}: {out}{err}");
    d.ok(
        "share.detach",
        vec![
            ("share", t("g1")),
            ("protocol", t("nfs")),
            (
                "connector",
                Value::Map(vec![(t("host"), t("compute-1")), (t("ip"), t("127.0.0.1"))]),
            ),
        ],
    );

    // Written through NFS (libnfs 4.0 writes at most ~3.9 KB per file over NFSv4).
    let upload = xfs.base().join("upload.bin");
    let sent = pattern(3, 3000);
    std::fs::write(&upload, &sent).unwrap();
    let (ok, out, err) = try_run(&[
        "nfs-cp",
        upload.to_str().unwrap(),
        &g.url(&format!("/shelf/{id}/upload.bin")),
    ]);
    assert!(ok, "nfs-cp: {out}{err}");
    assert_eq!(
        std::fs::read(dir.join("upload.bin")).unwrap(),
        sent,
        "data written through NFS is on disk"
    );

    // A share exported to someone else is not served to us.
    d.ok("share.create", vec![("name", t("g2")), ("size", n(MIB))]);
    let g2 = d.ok(
        "export.create",
        vec![
            ("share", t("g2")),
            ("protocol", t("nfs")),
            ("driver", t("ganesha")),
            ("clients", clients(&["192.0.2.1"])),
            ("root_squash", Value::Bool(false)),
        ],
    );
    let g2_id = field(sub(&g2, "export"), "share");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !try_run(&["nfs-cat", &g.url(&format!("/shelf/{g2_id}/volume"))]).0,
        "access control holds"
    );

    // Delete: the running ganesha drops the export, and was never restarted.
    std::fs::remove_file(dir.join("upload.bin")).unwrap();
    d.ok(
        "export.delete",
        vec![("share", t("g1")), ("protocol", t("nfs"))],
    );
    assert!(
        eventually(10, || !try_run(&["nfs-cat", &vol_url]).0),
        "export still served after delete"
    );
    assert_eq!(
        std::fs::read_to_string(&g.pidfile).unwrap(),
        ganesha_pid,
        "same ganesha process"
    );
}

#[test]
fn a_missing_ganesha_is_a_clean_error() {
    let xfs = Xfs::new("noganesha", 512 << 20);
    let base = xfs.base().to_path_buf();
    let d = Daemon::start(&Layout::on_xfs(
        &xfs,
        &format!(
            "[nfs]\nganesha_exports = {:?}\nganesha_pidfile = {:?}\n",
            base.join("g.conf").display().to_string(),
            base.join("nope.pid").display().to_string()
        ),
    ));
    d.ok("share.create", vec![("name", t("v")), ("size", n(MIB))]);
    let m = d.err(
        "export.create",
        vec![
            ("share", t("v")),
            ("protocol", t("nfs")),
            ("driver", t("ganesha")),
            ("clients", clients(&["127.0.0.1"])),
        ],
        "busy",
    );
    assert!(m.contains("ganesha.nfsd is not running"), "{m}");
    d.ok("hello", vec![]);
}
