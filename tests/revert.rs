//! `share.revert` against the real shelfd on a real XFS: the content becomes the
//! snapshot's byte for byte (compared whole, and by SHA-256), the share keeps its size and
//! identity, a tgt LUN serves the reverted content to a real initiator, a crash at every
//! step leaves the old or the new content, and hostile requests are refused.

mod common;

use std::path::{Path, PathBuf};

use ciborium::Value;
use common::*;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const INIT: &str = "iqn.2026-12.org.example:revert-client";

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn snapshot_file(pool: &Path, id: &str) -> PathBuf {
    pool.join("snapshots").join(id)
}

fn staging(pool: &Path) -> Vec<String> {
    std::fs::read_dir(pool.join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A share `name` of `size` bytes holding pattern `old` in its first MiBs, a snapshot
/// `s0` of it, then pattern `new` written over it. Returns (share id, snapshot id,
/// the snapshot's content).
fn share_with_snapshot(
    d: &Daemon,
    pool: &Path,
    name: &str,
    size: u64,
) -> (String, String, Vec<u8>) {
    let r = d.ok("share.create", vec![("name", t(name)), ("size", n(size))]);
    let id = field(sub(&r, "share"), "id");
    write_at(&volume(pool, &id), 0, &pattern(1, size as usize));
    let s = d.ok(
        "snapshot.create",
        vec![("share", t(name)), ("name", t("s0"))],
    );
    let sid = field(sub(&s, "snapshot"), "id");
    let snap = std::fs::read(snapshot_file(pool, &sid)).unwrap();
    write_at(&volume(pool, &id), 0, &pattern(2, size as usize));
    assert_ne!(std::fs::read(volume(pool, &id)).unwrap(), snap);
    (id, sid, snap)
}

fn revert(name: &str, snap: &str) -> Vec<(&'static str, Value)> {
    vec![("share", t(name)), ("snapshot", t(snap))]
}

#[test]
fn revert_gives_the_snapshot_content_back_at_the_share_size() {
    let xfs = Xfs::new("revert", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let pool = xfs.mount.join("pool");
    let d = Daemon::start(&layout);
    let (id, sid, snap) = share_with_snapshot(&d, &pool, "v", 8 * MIB);
    // Grown after the snapshot: the share keeps its 12 MiB, the tail reads zeros.
    d.ok(
        "share.resize",
        vec![("share", t("v")), ("size", n(12 * MIB))],
    );
    write_at(&volume(&pool, &id), 10 * MIB, &pattern(3, MIB as usize));
    let before = d.ok("share.show", vec![("share", t("v"))]);

    let r = d.ok("share.revert", revert("v", "s0"));
    assert_eq!(shelf::client::get(&r, "changed"), Some(&Value::Bool(true)));
    let share = sub(&r, "share");
    assert_eq!(field(share, "id"), id);
    assert_eq!(shelf::client::get_u64(share, "size"), Some(12 * MIB));
    let now = std::fs::read(volume(&pool, &id)).unwrap();
    assert_eq!(now.len() as u64, 12 * MIB);
    assert_eq!(sha(&now[..snap.len()]), sha(&snap));
    assert_eq!(&now[..snap.len()], &snap[..], "reverted content differs");
    assert!(now[snap.len()..].iter().all(|b| *b == 0), "tail not zero");
    println!("reverted: sha256 {} = snapshot's", sha(&now[..snap.len()]));
    // The share row is the same; the snapshot is still there, unchanged.
    let after = d.ok("share.show", vec![("share", t("v"))]);
    for k in ["id", "name", "created_at"] {
        assert_eq!(
            shelf::client::get(&before, k),
            shelf::client::get(&after, k),
            "{k}"
        );
    }
    assert_eq!(std::fs::read(snapshot_file(&pool, &sid)).unwrap(), snap);
    assert!(staging(&pool).is_empty(), "{:?}", staging(&pool));
    // The volume still opens as shelf's (its identity was carried over): verify is clean.
    let v = d.ok("verify", vec![]);
    assert_eq!(
        shelf::client::get(&v, "clean"),
        Some(&Value::Bool(true)),
        "{v:?}"
    );
    // A write after the revert stays in the share, not in the snapshot (no shared blocks
    // written through).
    write_at(&volume(&pool, &id), 0, &pattern(4, MIB as usize));
    assert_eq!(std::fs::read(snapshot_file(&pool, &sid)).unwrap(), snap);
    // By id too; audited.
    d.ok("share.revert", revert(&id, &sid));
    assert_eq!(
        &std::fs::read(volume(&pool, &id)).unwrap()[..snap.len()],
        &snap[..]
    );
    let audit = format!("{:?}", d.ok("audit.list", vec![]));
    assert!(audit.contains("share.revert"), "{audit}");
}

#[test]
fn revert_refuses_a_snapshot_of_another_share_and_a_planted_volume() {
    let xfs = Xfs::new("revert-hostile", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let pool = xfs.mount.join("pool");
    let d = Daemon::start(&layout);
    let (a_id, _, _) = share_with_snapshot(&d, &pool, "a", 4 * MIB);
    let (_, b_snap, _) = share_with_snapshot(&d, &pool, "b", 4 * MIB);
    let a_data = std::fs::read(volume(&pool, &a_id)).unwrap();
    let m = d.err("share.revert", revert("a", &b_snap), "invalid_argument");
    assert!(m.contains("belongs to share b"), "{m}");
    d.err("share.revert", revert("a", "nope"), "not_found");
    d.err(
        "share.revert",
        vec![("share", t("a")), ("snapshot", t("s0")), ("bogus", t("x"))],
        "invalid_argument",
    );
    assert_eq!(std::fs::read(volume(&pool, &a_id)).unwrap(), a_data);

    // A tenant with root on an NFS client replaces the volume by a symbolic link to a
    // file of its choosing: the revert answers tampered and touches neither.
    let outside = xfs.mount.join("outside");
    std::fs::write(&outside, b"not yours").unwrap();
    let vol = volume(&pool, &a_id);
    std::fs::rename(&vol, pool.join("shares").join(&a_id).join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &vol).unwrap();
    let m = d.err("share.revert", revert("a", "s0"), "tampered");
    assert!(m.contains("symbolic link"), "{m}");
    assert!(std::fs::symlink_metadata(&vol)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
    assert!(staging(&pool).is_empty(), "{:?}", staging(&pool));
    // Force does not change that.
    let mut forced = revert("a", "s0");
    forced.push(("force", Value::Bool(true)));
    d.err("share.revert", forced, "tampered");
}

#[test]
fn revert_is_busy_while_attached_and_force_repoints_the_tgt_lun() {
    let rig = Rig::start("revert-tgt", 512 << 20, "", false);
    let (d, pool) = (&rig.d, rig.pool());
    let (id, _, snap) = share_with_snapshot(d, &pool, "v", 4 * MIB);
    let attach = d.ok(
        "share.attach",
        vec![
            ("share", t("v")),
            ("connector", connector(INIT, "127.0.0.1", "client-a")),
            ("protocol", t("iscsi")),
        ],
    );
    let login = Login::from_reply(&attach, INIT);
    let old = std::fs::read(volume(&pool, &id)).unwrap();
    assert_eq!(login.read_all(rig.base()), old, "LUN serves the volume");
    let m = d.err("share.revert", revert("v", "s0"), "busy");
    assert!(m.contains("client-a"), "{m}");
    assert_eq!(std::fs::read(volume(&pool, &id)).unwrap(), old);

    let mut forced = revert("v", "s0");
    forced.push(("force", Value::Bool(true)));
    let r = d.ok("share.revert", forced);
    assert!(shelf::client::get(&r, "warnings").is_none(), "{r:?}");
    // The initiator (logging in again, same target and CHAP account) reads the snapshot's
    // content: tgt serves the new file, not the old one it held open.
    let read = login.read_all(rig.base());
    assert_eq!(sha(&read), sha(&snap));
    assert_eq!(read, snap);
    // And writes through the LUN land in the new volume.
    login.write(0, 65536, 0x5a).unwrap();
    let vol = std::fs::read(volume(&pool, &id)).unwrap();
    assert!(vol[..65536].iter().all(|b| *b == 0x5a));
}

#[test]
fn a_crash_at_every_revert_step_leaves_the_old_or_the_new_content() {
    let mut rig = Rig::start("revert-crash", 512 << 20, "", false);
    let pool = rig.pool();
    for (i, fp) in shelf::engine::failpoint::REVERT_POINTS.iter().enumerate() {
        let name = format!("v{i}");
        let (id, _, snap) = share_with_snapshot(&rig.d, &pool, &name, 4 * MIB);
        let attach = rig.d.ok(
            "share.attach",
            vec![
                ("share", t(&name)),
                ("connector", connector(INIT, "127.0.0.1", "client-a")),
                ("protocol", t("iscsi")),
            ],
        );
        let login = Login::from_reply(&attach, INIT);
        let old = std::fs::read(volume(&pool, &id)).unwrap();
        rig.d.stop();
        rig.d.restart_with_env(&[("SHELF_FAILPOINT", fp)]);
        let mut args = revert(&name, "s0");
        args.push(("force", Value::Bool(true)));
        let r = rig.d.call("share.revert", args);
        assert!(r.is_err(), "{fp}: answered {r:?} instead of crashing");
        assert!(!rig.d.wait_exit().success(), "{fp}: shelfd did not abort");
        rig.d.restart();
        let swapped = matches!(*fp, "share.revert.after_swap" | "share.revert.after_commit");
        let want = if swapped { &snap } else { &old };
        let now = std::fs::read(volume(&pool, &id)).unwrap();
        assert_eq!(sha(&now), sha(want), "{fp}: volume is neither as expected");
        assert!(staging(&pool).is_empty(), "{fp}: {:?}", staging(&pool));
        // The LUN serves what the volume holds (recovery re-opened it after a swap).
        assert_eq!(login.read_all(rig.base()), *want, "{fp}: LUN content");
        let v = rig.d.ok("verify", vec![]);
        let clean = shelf::client::get(&v, "clean");
        assert_eq!(clean, Some(&Value::Bool(true)), "{fp}: {v:?}");
        // Nothing is left journaled: the revert runs again and answers.
        let mut again = revert(&name, "s0");
        again.push(("force", Value::Bool(true)));
        rig.d.ok("share.revert", again);
        assert_eq!(std::fs::read(volume(&pool, &id)).unwrap(), snap, "{fp}");
        println!(
            "{fp}: recovered to the {} content",
            if swapped { "new" } else { "old" }
        );
    }
}

#[test]
fn a_formatted_share_is_unmounted_reverted_and_mounted_again() {
    let xfs = Xfs::new("revert-fs", 2 << 30);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let base = layout.state.join("mounts");
    let _mounts = MountsUnder(base.clone());
    let d = Daemon::start(&layout);
    let id = create_formatted(&d, "data", 320 * MIB, "xfs");
    let mp = base.join(&id);
    std::fs::write(mp.join("hello.txt"), b"before the snapshot").unwrap();
    d.ok(
        "snapshot.create",
        vec![("share", t("data")), ("name", t("s1"))],
    );
    std::fs::write(mp.join("hello.txt"), b"after the snapshot").unwrap();
    std::fs::write(mp.join("later.txt"), b"x").unwrap();
    // Grown after the snapshot: the reverted filesystem is grown back to the volume.
    let fs_size = |p: &Path| {
        let s = nix::sys::statvfs::statvfs(p).unwrap();
        s.blocks() * s.fragment_size()
    };
    let small = fs_size(&mp);
    d.ok(
        "share.resize",
        vec![("share", t("data")), ("size", n(400 * MIB))],
    );
    let grown = fs_size(&mp);
    assert!(grown > small, "{grown} <= {small}");
    let r = d.ok("share.revert", revert("data", "s1"));
    assert!(shelf::client::get(&r, "warnings").is_none(), "{r:?}");
    assert_eq!(
        std::fs::read(mp.join("hello.txt")).unwrap(),
        b"before the snapshot"
    );
    assert!(!mp.join("later.txt").exists());
    assert_eq!(
        fs_size(&mp),
        grown,
        "the reverted filesystem is grown to the volume"
    );
}
