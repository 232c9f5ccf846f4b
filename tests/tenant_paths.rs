//! Tenants' writes into their share directory (docs/security.md §2), and two of §5's
//! smaller defences (a grow that runs out of space, an export whose stamp fails).
//!
//! The Cinder NFS export is the share directory, and a client with root on it can replace
//! `volume` with anything. Each kind of planted object is tried under every operation that
//! touches a volume, against the real daemon, a real tgtd and the kernel's NFS server:
//! every one is refused with `tampered` (or, for clone and delete, does the right thing),
//! the secrets the objects point at are untouched, no row appears, tgtd is never given the
//! planted path, `verify` says `tampered`, and `recover --rebuild-db` adopts none of them.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ciborium::Value;
use common::*;
use shelf::client::{get, get_text};

const MIB: u64 = 1 << 20;
const INIT: &str = "iqn.2026-11.org.example:tenant-client";

/// The kinds of object a tenant plants in place of `volume`.
const KINDS: &[&str] = &[
    "symlink-out",
    "symlink-share",
    "hardlink",
    "fifo",
    "dir",
    "foreign",
    "stolen-identity",
];

/// What must not change: size, modification time and content of a file.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    len: u64,
    mtime: (i64, i64),
    content: Vec<u8>,
}

fn fingerprint(p: &Path) -> Fingerprint {
    let m = std::fs::metadata(p).unwrap();
    Fingerprint {
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        content: std::fs::read(p).unwrap(),
    }
}

fn attach_args(share: &str) -> Vec<(&str, Value)> {
    vec![
        ("share", t(share)),
        ("protocol", t("iscsi")),
        ("connector", connector(INIT, "127.0.0.1", "tenant-host")),
    ]
}

/// The ACL tgtd has for target `iqn`.
fn acl_of(tgtd: &Tgtd, iqn: &str) -> Vec<String> {
    shelf::export::tgt::parse_show_target(&tgtd.show())
        .into_iter()
        .find(|x| x.iqn == iqn)
        .map(|x| x.acl.into_iter().collect())
        .unwrap_or_default()
}

fn array(v: &Value) -> &Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => panic!("not an array: {other:?}"),
    }
}

/// `(kind, object)` of every difference (verify) or finding (reconcile).
fn kinds(list: &Value) -> Vec<(String, String)> {
    array(list)
        .iter()
        .map(|x| (field(x, "kind"), field(x, "object")))
        .collect()
}

/// Backing-store paths tgtd has.
fn backing_stores(tgtd: &Tgtd) -> Vec<String> {
    tgtd.show()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Backing store path: "))
        .map(str::to_string)
        .collect()
}

/// Replace `dir/volume` with an object of `kind`, the way a root NFS client would (the
/// tenant keeps their own data aside as `volume.mine`).
fn plant(kind: &str, dir: &Path, outside: &Path, inside: &Path, victim: &Path) {
    let vol = dir.join("volume");
    std::fs::rename(&vol, dir.join("volume.mine")).unwrap();
    match kind {
        "symlink-out" => std::os::unix::fs::symlink(outside, &vol).unwrap(),
        "symlink-share" => std::os::unix::fs::symlink(victim, &vol).unwrap(),
        "hardlink" => std::fs::hard_link(inside, &vol).unwrap(),
        "fifo" => {
            nix::unistd::mkfifo(&vol, nix::sys::stat::Mode::from_bits_truncate(0o660)).unwrap()
        }
        "dir" => {
            std::fs::create_dir(&vol).unwrap();
            std::os::unix::fs::symlink(outside, vol.join("data")).unwrap();
        }
        "foreign" => std::fs::write(&vol, pattern(9, MIB as usize)).unwrap(),
        "stolen-identity" => {
            // A file carrying another share's identity, forged the only way an NFS client
            // can: in user.* attributes (RFC 8276), here every value of the victim's stamp
            // (trusted.* itself is out of an NFS client's reach).
            std::fs::write(&vol, pattern(9, MIB as usize)).unwrap();
            for (k, v) in shelf::sys::fs::get_identity(victim).unwrap() {
                xattr::set(&vol, format!("user.shelf.{k}"), v.as_bytes()).unwrap();
            }
        }
        other => panic!("unknown kind {other}"),
    }
}

fn setup() -> Rig {
    Rig::start("tenant", 1 << 30, "", true)
}

fn create(d: &Daemon, name: &str) -> String {
    let s = d.ok(
        "share.create",
        vec![("name", t(name)), ("size", n(8 * MIB))],
    );
    field(sub(&s, "share"), "id")
}

fn export_iscsi(d: &Daemon, share: &str) -> Result<Value, shelf::client::ClientError> {
    d.call(
        "export.create",
        vec![("share", t(share)), ("protocol", t("iscsi"))],
    )
}

fn export_nfs(d: &Daemon, share: &str) -> Result<Value, shelf::client::ClientError> {
    d.call(
        "export.create",
        vec![
            ("share", t(share)),
            ("protocol", t("nfs")),
            ("clients", Value::Array(vec![t("192.0.2.77")])),
        ],
    )
}

/// The wire code of a failed call.
fn code(r: Result<Value, shelf::client::ClientError>, what: &str) -> String {
    match r {
        Ok(v) => panic!("{what} succeeded: {v:?}"),
        Err(shelf::client::ClientError::Remote(e)) => {
            eprintln!("{what}: {}: {}", e.code, e.message);
            e.code
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn planted_objects_in_a_share_directory_are_refused_by_every_operation() {
    let mut s = setup();
    let d = &s.d;
    let pool = s.pool();
    // The secrets: a file outside the pool's filesystem, one on it (outside the pool
    // directory, for hard links), and another tenant's volume.
    let outside = s.xfs.base().join("secret-outside");
    std::fs::write(&outside, pattern(1, 4 * MIB as usize)).unwrap();
    let inside = s.xfs.mount.join("secret-inside");
    std::fs::write(&inside, pattern(2, 4 * MIB as usize)).unwrap();
    let victim_id = create(d, "victim");
    let victim = volume(&pool, &victim_id);
    write_at(&victim, 0, &pattern(3, MIB as usize));
    let secrets = [outside.clone(), inside.clone(), victim.clone()];
    let before: Vec<Fingerprint> = secrets.iter().map(|p| fingerprint(p)).collect();
    let unchanged = |what: &str| {
        for (p, f) in secrets.iter().zip(&before) {
            assert!(fingerprint(p) == *f, "{what}: {} changed", p.display());
        }
    };

    // Per kind: share A (exported over iSCSI and NFS, snapshotted, before the tampering)
    // and share B (nothing yet).
    let mut ids = Vec::new();
    for kind in KINDS {
        let (a, b) = (format!("{kind}-a"), format!("{kind}-b"));
        let (ia, ib) = (create(d, &a), create(d, &b));
        write_at(&volume(&pool, &ia), 0, &pattern(7, MIB as usize));
        export_iscsi(d, &a).unwrap();
        export_nfs(d, &a).unwrap();
        d.ok("share.attach", attach_args(&a));
        d.ok(
            "snapshot.create",
            vec![("share", t(&a)), ("name", t("before"))],
        );
        ids.push((kind.to_string(), a, ia, b, ib));
    }
    let snapshots = array(&d.ok("snapshot.list", vec![])).len();
    let exports = array(&d.ok("export.list", vec![])).len();
    for (kind, _, ia, _, ib) in &ids {
        for id in [ia, ib] {
            plant(
                kind,
                &pool.join("shares").join(id),
                &outside,
                &inside,
                &victim,
            );
        }
    }

    for (kind, a, ia, b, ib) in &ids {
        let r = d.call("share.resize", vec![("share", t(a)), ("size", n(64 * MIB))]);
        assert_eq!(code(r, &format!("{kind}: resize")), "tampered");
        unchanged(&format!("{kind}: resize"));
        let r = d.call(
            "snapshot.create",
            vec![("share", t(a)), ("name", t("after"))],
        );
        assert_eq!(code(r, &format!("{kind}: snapshot")), "tampered");
        unchanged(&format!("{kind}: snapshot"));
        // The snapshot from before the tampering is the tenant's real data: cloning it
        // works and gives that data, never a planted object's.
        let c = d.ok(
            "share.clone",
            vec![
                ("share", t(a)),
                ("snapshot", t("before")),
                ("name", t(&format!("{kind}-clone"))),
            ],
        );
        let cid = field(sub(&c, "share"), "id");
        assert_eq!(
            read_at(&volume(&pool, &cid), 0, 4096),
            pattern(7, 4096),
            "{kind}: clone"
        );
        // Taking access away is never held up by a planted object; giving it back is.
        d.ok("share.detach", attach_args(a));
        let iqn = format!("iqn.2026-11.org.example.shelf:{a}");
        assert!(!acl_of(&s.tgtd, &iqn).contains(&INIT.to_string()), "{kind}");
        let r = d.call("share.attach", attach_args(a));
        assert_eq!(code(r, &format!("{kind}: attach (exported)")), "tampered");
        assert!(!acl_of(&s.tgtd, &iqn).contains(&INIT.to_string()), "{kind}");
        // Revoking access whose record cannot be written is refused (a rebuild would
        // bring it back); the export stays as it was.
        let r = d.call(
            "export.delete",
            vec![("share", t(a)), ("protocol", t("nfs"))],
        );
        assert_eq!(code(r, &format!("{kind}: export.delete")), "tampered");

        let r = export_iscsi(d, b);
        assert_eq!(code(r, &format!("{kind}: export iscsi")), "tampered");
        let r = export_nfs(d, b);
        assert_eq!(code(r, &format!("{kind}: export nfs")), "tampered");
        let r = d.call("share.attach", attach_args(b));
        assert_eq!(code(r, &format!("{kind}: attach")), "tampered");
        unchanged(&format!("{kind}: exports"));
        for id in [ia, ib] {
            let planted = volume(&pool, id).display().to_string();
            assert!(
                !backing_stores(&s.tgtd).contains(&planted) || id == ia,
                "{kind}: tgtd was given {planted}"
            );
        }
        let file = std::fs::read_to_string(&s.ef.path).unwrap_or_default();
        assert!(!file.contains(ib.as_str()), "{kind}: {file}");
    }
    assert_eq!(array(&d.ok("snapshot.list", vec![])).len(), snapshots);
    assert_eq!(array(&d.ok("export.list", vec![])).len(), exports);

    // tgtd loses everything; reconcile re-creates the targets of sound volumes only.
    s.tgtd.restart();
    let r = d.ok("reconcile", vec![]);
    let found = kinds(sub(&r, "findings"));
    eprintln!("reconcile: {found:?}");
    let stores = backing_stores(&s.tgtd);
    for (kind, a, ia, _, _) in &ids {
        let iqn = format!("iqn.2026-11.org.example.shelf:{a}");
        assert!(
            found.contains(&("tampered".into(), iqn.clone())),
            "{kind}: {found:?}"
        );
        let planted = volume(&pool, ia).display().to_string();
        assert!(!stores.contains(&planted), "{kind}: {stores:?}");
    }
    unchanged("reconcile");

    let v = d.ok("verify", vec![]);
    let diffs = kinds(sub(&v, "differences"));
    eprintln!("verify: {diffs:?}");
    for (kind, _, ia, _, ib) in &ids {
        for id in [ia, ib] {
            assert!(
                diffs.contains(&("tampered".into(), id.clone())),
                "{kind}: {diffs:?}"
            );
        }
    }
    assert!(
        !diffs.iter().any(|(k, _)| k == "drifted" || k == "orphan"),
        "a planted object is tampered, never drifted or an orphan: {diffs:?}"
    );

    // Delete removes what is in the share's directory, never what it points at.
    for (kind, _, _, b, ib) in &ids {
        d.ok("share.delete", vec![("share", t(b))]);
        assert!(!pool.join("shares").join(ib).exists(), "{kind}");
        unchanged(&format!("{kind}: delete"));
    }

    // A rebuilt database adopts no planted object.
    let mut d = s.d;
    d.lose_db(None);
    let text = d.rebuild(&[]);
    d.restart();
    let names: Vec<String> = array(&d.ok("share.list", vec![]))
        .iter()
        .map(|s| field(s, "name"))
        .collect();
    for (kind, a, ia, _, _) in &ids {
        assert!(!names.contains(a), "{kind}: {names:?}");
        assert!(text.contains(ia.as_str()), "{kind}: not reported: {text}");
        assert!(names.contains(&format!("{kind}-clone")), "{names:?}");
    }
    assert!(names.contains(&"victim".to_string()), "{names:?}");
    unchanged("rebuild");
    // Nothing planted became a volume or snapshot of the rebuilt tree.
    for snap in array(&d.ok("snapshot.list", vec![])) {
        assert!(!ids.iter().any(|x| field(snap, "share") == x.2), "{snap:?}");
    }
    drop(d);
    drop(s.tgtd);
}

/// A scratch ext4 without reserved blocks on a loop device (ext4's `fallocate` grows the
/// file as it goes, so one that runs out of space part-way leaves the file longer).
fn ext4(size: u64) -> Xfs {
    loop_mounted("ext4", "ext4.img", size, &["mkfs.ext4", "-q", "-m", "0"])
}

#[test]
fn a_grow_that_runs_out_of_space_leaves_no_drift() {
    let fs = ext4(300 * MIB);
    let pool = fs.mount.join("pool");
    let layout = Layout::new(
        fs.base(),
        &format!("[pools.default]\npath = {:?}\n", pool.display().to_string()),
    );
    let d = Daemon::start(&layout);
    let s = d.ok(
        "share.create",
        vec![
            ("name", t("full")),
            ("size", n(16 * MIB)),
            ("sparse", Value::Bool(false)),
        ],
    );
    let id = field(sub(&s, "share"), "id");
    let vol = volume(&pool, &id);
    write_at(&vol, 0, &pattern(4, MIB as usize));
    // Everything the capacity rules allow (all of the free space): the allocation needs a
    // little more for its own bookkeeping and fails part-way.
    let free = nix::sys::statvfs::statvfs(&pool).unwrap();
    let free = free.blocks_available() * free.fragment_size();
    let want = 16 * MIB + free / 512 * 512;
    let r = d.call(
        "share.resize",
        vec![("share", t("full")), ("size", n(want))],
    );
    assert_eq!(code(r, "resize"), "no_space");
    let len = std::fs::metadata(&vol).unwrap().len();
    eprintln!("asked {want} bytes with {free} free; the volume is {len} bytes after the failure");
    assert_eq!(len, 16 * MIB, "the volume is back at its size");
    assert_eq!(read_at(&vol, 0, 4096), pattern(4, 4096));
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
    let shown = d.ok("share.show", vec![("share", t("full"))]);
    assert_eq!(get_text(&shown, "state"), Some("available"));
    // The space is back: a smaller grow works.
    d.ok(
        "share.resize",
        vec![("share", t("full")), ("size", n(32 * MIB))],
    );
}

#[test]
fn an_export_whose_record_cannot_be_written_is_refused() {
    // ext4 keeps a file's extended attributes in one block: the record of an NFS export
    // with 256 clients does not fit next to the share's identity.
    let fs = ext4(64 * MIB);
    let pool = fs.mount.join("pool");
    let ef = ExportsFile::new("stamp");
    let layout = Layout::new(
        fs.base(),
        &format!(
            "reconcile_interval = 0\n{}[pools.default]\npath = {:?}\n",
            ef.config(),
            pool.display().to_string()
        ),
    );
    let d = Daemon::start(&layout);
    let id = create(&d, "big");
    let many: Vec<Value> = (0..256)
        .map(|i| t(&format!("198.51.{}.{}", 100 + i / 200, 1 + i % 200)))
        .collect();
    let r = d.call(
        "export.create",
        vec![
            ("share", t("big")),
            ("protocol", t("nfs")),
            ("clients", Value::Array(many)),
        ],
    );
    let c = code(r, "export.create");
    assert_eq!(c, "invalid_argument");
    // Undone: no row, no line in the exports file, nothing recorded on the volume.
    assert_eq!(array(&d.ok("export.list", vec![])).len(), 0);
    let file = std::fs::read_to_string(&ef.path).unwrap_or_default();
    assert!(!file.contains(id.as_str()), "{file}");
    assert!(
        xattr::get(volume(&pool, &id), "trusted.shelf.exports")
            .unwrap()
            .is_none(),
        "a record was left on the volume"
    );
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
    // A record that fits is written and the export made.
    let r = d.ok(
        "export.create",
        vec![
            ("share", t("big")),
            ("protocol", t("nfs")),
            ("clients", Value::Array(vec![t("198.51.100.1")])),
        ],
    );
    assert_eq!(get(&r, "changed"), Some(&Value::Bool(true)));
    assert!(xattr::get(volume(&pool, &id), "trusted.shelf.exports")
        .unwrap()
        .is_some());
}

#[test]
fn a_detach_while_the_volume_is_away_is_not_undone_by_a_rebuild() {
    let mut s = setup();
    let id = create(&s.d, "moved");
    s.d.ok("share.attach", attach_args("moved"));
    let dir = s.pool().join("shares").join(&id);
    let (vol, aside) = (dir.join("volume"), dir.join("volume.mine"));
    let record = |p: &Path| {
        String::from_utf8(xattr::get(p, "trusted.shelf.exports").unwrap().unwrap()).unwrap()
    };
    assert!(record(&vol).contains(INIT));
    // The tenant moves its volume away, and back once the detach is answered.
    plant("foreign", &dir, Path::new("/nonexistent"), &vol, &vol);
    s.d.ok("share.detach", attach_args("moved"));
    let iqn = "iqn.2026-11.org.example.shelf:moved".to_string();
    assert!(!acl_of(&s.tgtd, &iqn).contains(&INIT.to_string()));
    assert_eq!(array(&s.d.ok("attachment.list", vec![])).len(), 0);
    std::fs::remove_file(&vol).unwrap();
    std::fs::rename(&aside, &vol).unwrap();
    // The genuine volume still lists the revoked attachment: the detach could not reach it.
    assert!(record(&vol).contains(INIT), "{}", record(&vol));

    // Start-up writes the record again, from the database.
    s.d.stop();
    let seen = s.d.log_text().len();
    s.d.restart();
    let log = s.d.log_text()[seen..].to_string();
    eprintln!("{log}");
    assert!(log.contains("is written from the database"), "{log}");
    assert!(!record(&vol).contains(INIT), "{}", record(&vol));

    // A rebuilt database does not give the access back.
    s.d.lose_db(None);
    let text = s.d.rebuild(&[]);
    assert!(text.contains("0 attachment(s)"), "{text}");
    s.d.restart();
    assert_eq!(array(&s.d.ok("attachment.list", vec![])).len(), 0);
    assert!(!acl_of(&s.tgtd, &iqn).contains(&INIT.to_string()));
}
