//! `snapshot.export` against a real shelfd on a real XFS: raw exports identical to the
//! snapshot with its holes kept (allocated blocks checked), qcow2 exports checked by the
//! real `qemu-img compare` and `qemu-img info`, the stream read by shelfctl into a file
//! and into a pipe, cancels and a crash that leave nothing behind, hostile destinations,
//! and the bounds on streams (count, idle timeout).

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ciborium::Value;
use common::*;
use shelf::client::{args, get, get_text, get_u64, Client};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
/// Where the test writes data into the share: everything else is a hole.
const DATA_AT: [u64; 3] = [0, 10 * MIB, 63 * MIB];

fn md5_of(path: &Path) -> String {
    let out = sh(&["md5sum", path.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().to_string()
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A share with data at [`DATA_AT`] (64 KiB each) and a snapshot of it; returns the
/// snapshot's id and its file.
fn snapshot_with_holes(d: &Daemon, pool: &Path, name: &str) -> (String, PathBuf) {
    let made = d.ok("share.create", vec![("name", t(name)), ("size", n(SIZE))]);
    let share = field(sub(&made, "share"), "id");
    for (i, off) in DATA_AT.iter().enumerate() {
        write_at(
            &volume(pool, &share),
            *off,
            &pattern(i as u8 + 1, 64 * 1024),
        );
    }
    let snap = d.ok(
        "snapshot.create",
        vec![("share", t(name)), ("name", t("s1"))],
    );
    let id = field(sub(&snap, "snapshot"), "id");
    let file = pool.join("snapshots").join(&id);
    (id, file)
}

fn shelfctl(socket: &Path, argv: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shelfctl"))
        .arg("--socket")
        .arg(socket)
        .args(argv)
        .output()
        .unwrap()
}

fn images_dir_leftovers(pool: &Path) -> Vec<String> {
    std::fs::read_dir(pool.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".export-"))
        .collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The holes of the snapshot are holes of the export: the data found with SEEK_DATA from
/// the middle of each hole is the next written range.
fn assert_same_holes(snapshot: &Path, export: &Path) {
    use nix::unistd::{lseek, Whence};
    let (a, b) = (
        std::fs::File::open(snapshot).unwrap(),
        std::fs::File::open(export).unwrap(),
    );
    for at in [MIB, 20 * MIB, 40 * MIB] {
        let want = lseek(&a, at as i64, Whence::SeekData).unwrap();
        let got = lseek(&b, at as i64, Whence::SeekData).unwrap();
        assert_eq!(got, want, "data after {at} in the export vs the snapshot");
    }
}

fn export_dirs(dir: &Path) -> String {
    format!(
        "[images]\nexport_dirs = [{:?}]\n",
        dir.display().to_string()
    )
}

#[test]
fn exports_to_a_path_are_the_snapshot_with_its_holes() {
    let xfs = Xfs::new("export-path", 1 << 30);
    let out = xfs.mount.join("exports");
    std::fs::create_dir_all(out.join("sub")).unwrap();
    let d = Daemon::start(&Layout::on_xfs(&xfs, &export_dirs(&out)));
    let pool = xfs.mount.join("pool");
    let (snap, snap_file) = snapshot_with_holes(&d, &pool, "v1");

    // raw: the same bytes, the same holes.
    let raw = out.join("sub").join("v1.raw");
    let r = d.ok(
        "snapshot.export",
        vec![("snapshot", t(&snap)), ("path", t(raw.to_str().unwrap()))],
    );
    assert_eq!(get_u64(&r, "size"), Some(SIZE));
    let done = wait_job(&d, &field(&r, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
    assert_eq!(get_u64(&done, "done"), Some(SIZE));
    assert_eq!(md5_of(&raw), md5_of(&snap_file));
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), SIZE);
    let a = allocated(&raw);
    println!("raw export: {a} bytes allocated of {SIZE}");
    assert!(a <= 4 * MIB, "the holes were filled: {a} bytes allocated");
    assert_same_holes(&snap_file, &raw);
    assert_eq!(dir_entries(&out.join("sub")), vec!["v1.raw".to_string()]);

    // qcow2: what qemu-img says it is.
    let q = out.join("v1.qcow2");
    let r = d.ok(
        "snapshot.export",
        vec![
            ("snapshot", t(&snap)),
            ("format", t("qcow2")),
            ("path", t(q.to_str().unwrap())),
        ],
    );
    let done = wait_job(&d, &field(&r, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
    let info = sh(&["qemu-img", "info", "--output=json", q.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["virtual-size"], SIZE, "{info}");
    assert!(info.get("backing-filename").is_none(), "{info}");
    sh(&[
        "qemu-img",
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        snap_file.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    println!(
        "qcow2 export: {} bytes for a {SIZE}-byte snapshot",
        std::fs::metadata(&q).unwrap().len()
    );

    // The same path again: never replaced.
    let before = md5_of(&raw);
    let e = d.err(
        "snapshot.export",
        vec![("snapshot", t(&snap)), ("path", t(raw.to_str().unwrap()))],
        "already_exists",
    );
    println!("existing file: {e}");
    assert_eq!(md5_of(&raw), before);
    assert_eq!(dir_entries(&out.join("sub")), vec!["v1.raw".to_string()]);
}

#[test]
fn hostile_destinations_are_refused_and_leave_nothing() {
    let xfs = Xfs::new("export-hostile", 1 << 30);
    let out = xfs.mount.join("exports");
    let elsewhere = xfs.mount.join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other_pool = xfs.mount.join("other");
    let extra = format!(
        "{}\n[pools.other]\npath = {:?}\n",
        export_dirs(&out),
        other_pool.display().to_string()
    );
    let d = Daemon::start(&Layout::on_xfs(&xfs, &extra));
    let pool = xfs.mount.join("pool");
    let made = d.ok(
        "share.create",
        vec![("name", t("h1")), ("size", n(SIZE)), ("pool", t("default"))],
    );
    let share = field(sub(&made, "share"), "id");
    write_at(&volume(&pool, &share), 0, &pattern(9, 4096));
    let snap = d.ok(
        "snapshot.create",
        vec![("share", t(&share)), ("name", t("s1"))],
    );
    let snap = field(sub(&snap, "snapshot"), "id");
    let export = |path: &str| {
        d.call(
            "snapshot.export",
            vec![("snapshot", t(&snap)), ("path", t(path))],
        )
    };
    let code = |path: &str| match export(path) {
        Ok(v) => panic!("{path}: exported: {v:?}"),
        Err(shelf::client::ClientError::Remote(e)) => {
            println!("{path}: {}: {}", e.code, e.message);
            e.code
        }
        Err(e) => panic!("{e}"),
    };

    // Outside the export directory, or relative.
    let outside = elsewhere.join("x.raw");
    assert_eq!(code(outside.to_str().unwrap()), "invalid_argument");
    assert_eq!(code("x.raw"), "invalid_argument");
    // `..` out of it (and even `..` that stays inside).
    let dotdot = format!("{}/../elsewhere/y.raw", out.display());
    assert_eq!(code(&dotdot), "invalid_argument");
    let inside = format!("{}/a/../z.raw", out.display());
    assert_eq!(code(&inside), "invalid_argument");
    // A symlink in the path, to a directory elsewhere, and as the last component.
    std::os::unix::fs::symlink(&elsewhere, out.join("link")).unwrap();
    assert_eq!(
        code(out.join("link").join("w.raw").to_str().unwrap()),
        "invalid_argument"
    );
    std::os::unix::fs::symlink(elsewhere.join("target.raw"), out.join("last.raw")).unwrap();
    assert_eq!(
        code(out.join("last.raw").to_str().unwrap()),
        "already_exists"
    );
    // An existing file and a FIFO at the path: refused, and left as they are.
    std::fs::write(out.join("taken.raw"), b"mine").unwrap();
    assert_eq!(
        code(out.join("taken.raw").to_str().unwrap()),
        "already_exists"
    );
    assert_eq!(std::fs::read(out.join("taken.raw")).unwrap(), b"mine");
    let fifo = out.join("fifo.raw");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(code(fifo.to_str().unwrap()), "already_exists");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // A directory that does not exist.
    assert_eq!(
        code(out.join("nodir").join("n.raw").to_str().unwrap()),
        "invalid_argument"
    );
    // A snapshot of another pool.
    let e = d.err(
        "snapshot.export",
        vec![
            ("snapshot", t(&snap)),
            ("pool", t("other")),
            ("path", t(out.join("p.raw").to_str().unwrap())),
        ],
        "not_found",
    );
    println!("other pool: {e}");
    // A format that is neither.
    d.err(
        "snapshot.export",
        vec![("snapshot", t(&snap)), ("format", t("vmdk"))],
        "invalid_argument",
    );
    // Nothing was written anywhere.
    assert_eq!(
        dir_entries(&out),
        vec!["fifo.raw", "last.raw", "link", "taken.raw"]
    );
    assert!(dir_entries(&elsewhere).is_empty());
    assert!(images_dir_leftovers(&pool).is_empty());
}

#[test]
fn shelfctl_reads_exports_over_the_socket_into_a_file_and_a_pipe() {
    let xfs = Xfs::new("export-stream", 1 << 30);
    let d = Daemon::start(&Layout::on_xfs(&xfs, ""));
    let pool = xfs.mount.join("pool");
    let (snap, snap_file) = snapshot_with_holes(&d, &pool, "v2");
    let dir = xfs.mount.join("client");
    std::fs::create_dir_all(&dir).unwrap();

    // Into a file: the same bytes, holes kept.
    let raw = dir.join("v2.raw");
    let o = shelfctl(
        &d.socket,
        &["snapshot", "export", &snap, raw.to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(md5_of(&raw), md5_of(&snap_file));
    let a = allocated(&raw);
    println!("raw over the socket: {a} bytes allocated of {SIZE}");
    assert!(a <= 4 * MIB, "{a}");
    assert_same_holes(&snap_file, &raw);
    // An existing file is not overwritten by shelfctl either.
    let o = shelfctl(
        &d.socket,
        &["snapshot", "export", &snap, raw.to_str().unwrap()],
    );
    assert!(!o.status.success());

    // Into a pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shelfctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["snapshot", "export", "--share", "v2", "s1", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let md5 = Command::new("md5sum")
        .stdin(child.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let piped = String::from_utf8_lossy(&md5.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(piped, md5_of(&snap_file));

    // qcow2 over the socket: staged in the pool, streamed, and the staging file removed.
    let q = dir.join("v2.qcow2");
    let o = shelfctl(
        &d.socket,
        &[
            "snapshot",
            "export",
            &snap,
            q.to_str().unwrap(),
            "--format",
            "qcow2",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    sh(&[
        "qemu-img",
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        snap_file.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    assert!(images_dir_leftovers(&pool).is_empty());

    // --server-path without export directories: refused, with `unsupported`.
    let o = shelfctl(
        &d.socket,
        &["snapshot", "export", &snap, "--server-path", "/tmp/x.raw"],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unsupported"),
        "{o:?}"
    );

    // The jobs of the streams ended done, counting every byte.
    let jobs = d.ok("job.list", vec![]);
    let Value::Array(jobs) = jobs else { panic!() };
    let exports: Vec<&Value> = jobs
        .iter()
        .filter(|j| get_text(j, "op") == Some("snapshot.export"))
        .collect();
    assert_eq!(exports.len(), 3, "{exports:?}");
    for j in exports {
        assert_eq!(get_text(j, "state"), Some("done"), "{j:?}");
        assert_eq!(get_u64(j, "done"), get_u64(j, "total"), "{j:?}");
    }
}

/// Read one chunk of a stream opened by `snapshot.export`.
fn open_and_read_once(c: &mut Client, snap: &str, format: &str) -> (String, String) {
    let r = c
        .call(
            "snapshot.export",
            args(vec![("snapshot", t(snap)), ("format", t(format))]),
        )
        .unwrap();
    let (stream, job) = (field(&r, "stream"), field(&r, "job"));
    let chunk = c
        .call(
            "stream.read",
            args(vec![("stream", t(&stream)), ("max", n(4096))]),
        )
        .unwrap();
    assert!(matches!(get(&chunk, "data"), Some(Value::Bytes(b)) if b.len() == 4096));
    assert_eq!(get(&chunk, "end"), Some(&Value::Bool(false)));
    (stream, job)
}

#[test]
fn cancel_close_and_a_crash_midway_leave_nothing() {
    let xfs = Xfs::new("export-cancel", 1 << 30);
    let out = xfs.mount.join("exports");
    std::fs::create_dir_all(&out).unwrap();
    let mut d = Daemon::start(&Layout::on_xfs(&xfs, &export_dirs(&out)));
    let pool = xfs.mount.join("pool");
    let (snap, _) = snapshot_with_holes(&d, &pool, "v3");
    let mut c = d.client();

    for format in ["raw", "qcow2"] {
        // job.cancel midway.
        let (stream, job) = open_and_read_once(&mut c, &snap, format);
        if format == "qcow2" {
            assert_eq!(images_dir_leftovers(&pool).len(), 1);
        }
        // While it is exported, the snapshot cannot be deleted.
        d.err("snapshot.delete", vec![("snapshot", t(&snap))], "busy");
        d.ok("job.cancel", vec![("job", t(&job))]);
        let ended = wait_job(&d, &job);
        assert_eq!(get_text(&ended, "state"), Some("cancelled"), "{ended:?}");
        assert_eq!(get_u64(&ended, "done"), Some(4096));
        let e = d.err("stream.read", vec![("stream", t(&stream))], "not_found");
        assert!(e.contains("cancelled"), "{e}");
        assert!(images_dir_leftovers(&pool).is_empty());

        // stream.close midway.
        let (stream, job) = open_and_read_once(&mut c, &snap, format);
        let closed = d.ok("stream.close", vec![("stream", t(&stream))]);
        assert_eq!(get(&closed, "changed"), Some(&Value::Bool(true)));
        let again = d.ok("stream.close", vec![("stream", t(&stream))]);
        assert_eq!(get(&again, "changed"), Some(&Value::Bool(false)));
        assert_eq!(get_text(&wait_job(&d, &job), "state"), Some("cancelled"));
        assert!(images_dir_leftovers(&pool).is_empty());
    }

    // A crash of shelfd in the middle of an export to a path: the restart removes the
    // partial file, and the destination was never there.
    let dest = out.join("crash.raw");
    drop(c);
    d.stop();
    d.restart_with_env(&[("SHELF_FAILPOINT", "snapshot.export.after_write")]);
    let _ = d.call(
        "snapshot.export",
        vec![("snapshot", t(&snap)), ("path", t(dest.to_str().unwrap()))],
    );
    d.wait_exit();
    let left = dir_entries(&out);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(".shelf-export-"), "{left:?}");
    d.restart();
    assert!(dir_entries(&out).is_empty(), "{:?}", dir_entries(&out));
    assert!(!d.log_text().is_empty());

    // The snapshot is deletable again once no export holds it.
    d.ok("snapshot.delete", vec![("snapshot", t(&snap))]);
}

#[test]
fn streams_are_bounded_in_number_and_expire_when_idle() {
    let xfs = Xfs::new("export-bounds", 1 << 30);
    let extra = "[limits]\nmax_streams = 2\nstream_idle_timeout = 2\n";
    let d = Daemon::start(&Layout::on_xfs(&xfs, extra));
    let pool = xfs.mount.join("pool");
    let (snap, _) = snapshot_with_holes(&d, &pool, "v4");
    let open = |format: &str| {
        d.call(
            "snapshot.export",
            vec![("snapshot", t(&snap)), ("format", t(format))],
        )
    };
    let a = open("raw").unwrap();
    let b = open("qcow2").unwrap();
    match open("qcow2") {
        Err(shelf::client::ClientError::Remote(e)) => {
            assert_eq!(e.code, "busy", "{}", e.message);
            println!("third stream: {}", e.message);
        }
        other => panic!("a third stream opened: {other:?}"),
    }
    // The refused one left no staging file; the open qcow2 one has its own.
    assert_eq!(images_dir_leftovers(&pool).len(), 1);
    // Nobody reads them: they expire, their jobs fail, their staging files go.
    for r in [&a, &b] {
        let job = wait_job(&d, &field(r, "job"));
        assert_eq!(get_text(&job, "state"), Some("failed"), "{job:?}");
        let msg = get_text(get(&job, "error").unwrap(), "message").unwrap();
        assert!(msg.contains("expired"), "{msg}");
        let e = d.err(
            "stream.read",
            vec![("stream", t(&field(r, "stream")))],
            "not_found",
        );
        assert!(e.contains("expired"), "{e}");
    }
    assert!(images_dir_leftovers(&pool).is_empty());
    // Their places are free again.
    let c = open("raw").unwrap();
    d.ok("stream.close", vec![("stream", t(&field(&c, "stream")))]);
    // A read's `max` is bounded by the frame size, and 0 is refused.
    d.err(
        "stream.read",
        vec![("stream", t(&field(&c, "stream"))), ("max", n(0))],
        "invalid_argument",
    );
    // A path without export directories is `unsupported`.
    d.err(
        "snapshot.export",
        vec![("snapshot", t(&snap)), ("path", t("/tmp/x.raw"))],
        "unsupported",
    );
}

#[test]
fn dense_snapshots_export_identically() {
    const DENSE: u64 = 256 * MIB;
    let xfs = Xfs::new("export-dense", 2 << 30);
    let out = xfs.mount.join("exports");
    std::fs::create_dir_all(&out).unwrap();
    let d = Daemon::start(&Layout::on_xfs(&xfs, &export_dirs(&out)));
    let pool = xfs.mount.join("pool");
    let made = d.ok("share.create", vec![("name", t("v5")), ("size", n(DENSE))]);
    let share = field(sub(&made, "share"), "id");
    sh(&[
        "dd",
        "if=/dev/urandom",
        &format!("of={}", volume(&pool, &share).display()),
        "bs=1M",
        &format!("count={}", DENSE / MIB),
        "conv=notrunc,fsync",
        "status=none",
    ]);
    let snap = d.ok(
        "snapshot.create",
        vec![("share", t("v5")), ("name", t("s1"))],
    );
    let snap = field(sub(&snap, "snapshot"), "id");
    let snap_file = pool.join("snapshots").join(&snap);
    let want = md5_of(&snap_file);
    let mib_s = |t0: std::time::Instant| DENSE as f64 / MIB as f64 / t0.elapsed().as_secs_f64();

    let raw = out.join("v5.raw");
    let t0 = std::time::Instant::now();
    let r = d.ok(
        "snapshot.export",
        vec![("snapshot", t(&snap)), ("path", t(raw.to_str().unwrap()))],
    );
    assert_eq!(
        get_text(&wait_job(&d, &field(&r, "job")), "state"),
        Some("done")
    );
    println!("raw to a path: {:.0} MiB/s", mib_s(t0));
    assert_eq!(md5_of(&raw), want);

    let client = xfs.mount.join("client.raw");
    let t0 = std::time::Instant::now();
    let o = shelfctl(
        &d.socket,
        &["snapshot", "export", &snap, client.to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    println!(
        "raw over the socket (shelfctl, 1 MiB frames): {:.0} MiB/s",
        mib_s(t0)
    );
    assert_eq!(md5_of(&client), want);

    let q = out.join("v5.qcow2");
    let t0 = std::time::Instant::now();
    let r = d.ok(
        "snapshot.export",
        vec![
            ("snapshot", t(&snap)),
            ("format", t("qcow2")),
            ("path", t(q.to_str().unwrap())),
        ],
    );
    assert_eq!(
        get_text(&wait_job(&d, &field(&r, "job")), "state"),
        Some("done")
    );
    println!("qcow2 to a path: {:.0} MiB/s", mib_s(t0));
    sh(&[
        "qemu-img",
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        snap_file.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
}
