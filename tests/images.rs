//! The image cache and jobs against a real shelfd on XFS: a qcow2 image converted by the
//! real `qemu-img`, checksums as Glance gives them, 100 shares reflinked from one base,
//! progress and completion seen through job.show and the event stream, cancellation,
//! and a failed import that leaves nothing behind; uploads bounded by count and by the
//! pool's capacity rules.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ciborium::Value;
use common::*;
use shelf::client::{args, get, get_text, get_u64, Client};

const MIB: u64 = 1 << 20;

fn md5_of(path: &Path) -> String {
    let out = sh(&["md5sum", path.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().to_string()
}

/// `[images]` naming one import directory.
fn import_dir(dir: &Path) -> String {
    format!(
        "[images]\nimport_dirs = [{:?}]\n",
        dir.display().to_string()
    )
}

/// A 64 MiB disk with a pattern at a few offsets, as qcow2.
fn make_qcow2(dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("disk.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    for (i, off) in [0u64, 10 * MIB, 63 * MIB].iter().enumerate() {
        write_at(&raw, *off, &pattern(i as u8 + 1, 4096));
    }
    let q = dir.join("disk.qcow2");
    sh(&[
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    q
}

#[test]
fn images_import_as_jobs_and_shares_are_reflinked_from_them() {
    let xfs = Xfs::new("images", 2 << 30);
    let scratch = scratch("images-src");
    let d = Daemon::start(&Layout::on_xfs(&xfs, &import_dir(scratch.path())));
    let pool = xfs.mount.join("pool");
    let qcow2 = make_qcow2(scratch.path());

    // Someone follows the event stream from the start.
    let mut watcher = Client::connect(&d.socket).unwrap();
    watcher.set_timeout(Some(Duration::from_secs(60))).unwrap();
    let subscribed = watcher.call("events.subscribe", args(vec![])).unwrap();
    let epoch = field(&subscribed, "epoch");

    let r = d.ok(
        "image.import",
        vec![
            ("name", t("debian")),
            ("source", t(qcow2.to_str().unwrap())),
            ("checksum", t(&md5_of(&qcow2))),
        ],
    );
    let job = field(&r, "job");
    let done = wait_job(&d, &job);
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
    assert_eq!(get_u64(&done, "done"), get_u64(&done, "total"));
    let image = d.ok("image.show", vec![("image", t("debian"))]);
    assert_eq!(get_u64(&image, "size"), Some(64 * MIB));
    assert_eq!(field(&image, "state"), "available");
    assert!(field(&image, "checksum").starts_with("md5:"));
    assert_eq!(
        field(&image, "source_format"),
        "qcow2",
        "the detected format is recorded"
    );

    // The watcher saw the job end, with the same epoch.
    let t0 = Instant::now();
    loop {
        let e = watcher.recv_event().unwrap().expect("event");
        assert_eq!(field(&e, "epoch"), epoch);
        if field(&e, "kind") == "job.done" && field(&e, "object") == job {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
    }

    // 100 shares from one base: reflinks, each with the image's data, grown to 128 MiB.
    let used_before = get_u64(&d.ok("pool.show", vec![("name", t("default"))]), "used").unwrap();
    let mut ids = Vec::new();
    for i in 0..100 {
        let s = d.ok(
            "share.create",
            vec![
                ("name", t(&format!("vm{i}"))),
                ("size", n(128 * MIB)),
                ("from_image", t("debian")),
            ],
        );
        ids.push(field(sub(&s, "share"), "id"));
    }
    let used_after = get_u64(&d.ok("pool.show", vec![("name", t("default"))]), "used").unwrap();
    assert!(
        used_after - used_before < 16 * MIB,
        "100 shares from one image took {} bytes: copies, not reflinks",
        used_after - used_before
    );
    for id in [&ids[0], &ids[99]] {
        let v = volume(&pool, id);
        assert_eq!(std::fs::metadata(&v).unwrap().len(), 128 * MIB);
        assert_eq!(read_at(&v, 10 * MIB, 4096), pattern(2, 4096));
        assert_eq!(read_at(&v, 63 * MIB, 4096), pattern(3, 4096));
    }
    let m = d.err(
        "share.create",
        vec![
            ("name", t("tiny")),
            ("size", n(32 * MIB)),
            ("from_image", t("debian")),
        ],
        "invalid_argument",
    );
    assert!(m.contains("cannot be smaller"), "{m}");
    let shown = d.ok("image.show", vec![("image", t("debian"))]);
    assert_eq!(get_u64(&shown, "shares_made"), Some(100));

    // Deleting the image leaves the shares made from it whole.
    d.ok("image.delete", vec![("image", t("debian"))]);
    assert_eq!(read_at(&volume(&pool, &ids[5]), 0, 4096), pattern(1, 4096));
    assert_eq!(d.ok("image.list", vec![]), Value::Array(vec![]));
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");

    // A wrong checksum fails the job and leaves nothing behind.
    let r = d.ok(
        "image.import",
        vec![
            ("name", t("bad")),
            ("source", t(qcow2.to_str().unwrap())),
            ("checksum", t(&format!("sha256:{}", "0".repeat(64)))),
        ],
    );
    let failed = wait_job(&d, &field(&r, "job"));
    assert_eq!(get_text(&failed, "state"), Some("failed"));
    let err = sub(&failed, "error");
    assert_eq!(field(err, "code"), "invalid_argument");
    assert!(field(err, "message").contains("checksum mismatch"));
    assert_eq!(d.ok("image.list", vec![]), Value::Array(vec![]));
    assert_eq!(std::fs::read_dir(pool.join("images")).unwrap().count(), 0);
    d.err(
        "image.import",
        vec![("name", t("x")), ("source", t("relative/path"))],
        "invalid_argument",
    );
    d.err(
        "image.import",
        vec![
            ("name", t("x")),
            ("source", t("/x")),
            ("format", t("iso9660")),
        ],
        "invalid_argument",
    );
}

#[test]
fn a_cancelled_import_stops_and_leaves_nothing() {
    let xfs = Xfs::new("imgcancel", 1 << 30);
    let scratch = scratch("imgcancel-src");
    let d = Daemon::start(&Layout::on_xfs(&xfs, &import_dir(scratch.path())));
    let pool = xfs.mount.join("pool");
    // A FIFO is not a regular file: the inspector needs to read the image where it wants.
    let fifo = scratch.path().join("endless.raw");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let m = d.err(
        "image.import",
        vec![
            ("name", t("endless")),
            ("source", t(fifo.to_str().unwrap())),
            ("format", t("raw")),
        ],
        "invalid_argument",
    );
    assert!(m.contains("not a regular file"), "{m}");
    // A slow source: 16 GiB (sparse) to hash before anything is copied.
    let big = scratch.path().join("big.raw");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    write_at(&big, 0, &pattern(3, 4096));
    let r = d.ok(
        "image.import",
        vec![
            ("name", t("endless")),
            ("source", t(big.to_str().unwrap())),
            ("format", t("raw")),
            ("checksum", t(&format!("sha256:{}", "0".repeat(64)))),
        ],
    );
    let job = field(&r, "job");
    assert!(eventually(30, || get_u64(
        &d.ok("job.show", vec![("job", t(&job))]),
        "done"
    )
    .unwrap_or(0)
        >= 4 * MIB));
    assert_eq!(
        get_text(&d.ok("job.show", vec![("job", t(&job))]), "state"),
        Some("running")
    );
    let c = d.ok("job.cancel", vec![("job", t(&job))]);
    assert_eq!(get(&c, "changed"), Some(&Value::Bool(true)));
    let end = wait_job(&d, &job);
    assert_eq!(get_text(&end, "state"), Some("cancelled"), "{end:?}");
    assert_eq!(d.ok("image.list", vec![]), Value::Array(vec![]));
    assert_eq!(std::fs::read_dir(pool.join("images")).unwrap().count(), 0);
    let again = d.ok("job.cancel", vec![("job", t(&job))]);
    assert_eq!(get(&again, "changed"), Some(&Value::Bool(false)));
    // The job log keeps it.
    let list = format!("{:?}", d.ok("job.list", vec![]));
    assert!(list.contains(&job) && list.contains("cancelled"), "{list}");
}

#[test]
fn shelfctl_waits_with_progress_and_events_resume_after_a_reconnect() {
    let xfs = Xfs::new("imgctl", 1 << 30);
    let scratch = scratch("imgctl-src");
    let d = Daemon::start(&Layout::on_xfs(&xfs, &import_dir(scratch.path())));
    let qcow2 = make_qcow2(scratch.path());
    let out = Command::new(env!("CARGO_BIN_EXE_shelfctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["image", "import", "base", qcow2.to_str().unwrap(), "--wait"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.lines().last().unwrap_or("").starts_with("done "),
        "{stderr}"
    );
    assert!(stdout.contains("\"state\": \"done\""), "{stdout}");

    // Events: a client that saw seq N reconnects and gets exactly what came after.
    let mut c = d.client();
    let sub = c.call("events.subscribe", args(vec![])).unwrap();
    let epoch = field(&sub, "epoch");
    d.ok("share.create", vec![("name", t("a")), ("size", n(MIB))]);
    let first = c.recv_event().unwrap().unwrap();
    assert_eq!(field(&first, "kind"), "object.created");
    let seen = get_u64(&first, "seq").unwrap();
    drop(c);
    d.ok("share.create", vec![("name", t("b")), ("size", n(MIB))]);
    d.ok("share.delete", vec![("share", t("a"))]);
    let mut c = d.client();
    let sub = c
        .call(
            "events.subscribe",
            args(vec![("since", n(seen)), ("epoch", t(&epoch))]),
        )
        .unwrap();
    assert_eq!(get(&sub, "gap"), Some(&Value::Bool(false)));
    assert_eq!(get_u64(&sub, "backlog"), Some(2));
    let e1 = c.recv_event().unwrap().unwrap();
    let e2 = c.recv_event().unwrap().unwrap();
    assert_eq!(
        (get_u64(&e1, "seq"), field(&e1, "kind")),
        (Some(seen + 1), "object.created".into())
    );
    assert_eq!(
        (get_u64(&e2, "seq"), field(&e2, "kind")),
        (Some(seen + 2), "object.deleted".into())
    );
    // Requests still work on a subscribed connection.
    let v = c.call("share.list", args(vec![])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    // Another epoch cannot be resumed: the client is told to re-read.
    let mut c2 = d.client();
    let sub = c2
        .call(
            "events.subscribe",
            args(vec![("since", n(1)), ("epoch", t("older"))]),
        )
        .unwrap();
    assert_eq!(get(&sub, "gap"), Some(&Value::Bool(true)));
}

#[test]
fn an_image_uploaded_in_chunks_over_the_socket_is_imported() {
    let xfs = Xfs::new("imgupload", 1 << 30);
    let d = Daemon::start(&Layout::on_xfs(&xfs, ""));
    let pool = xfs.mount.join("pool");
    let scratch = scratch("imgupload-src");
    let qcow2 = make_qcow2(scratch.path());
    let bytes = std::fs::read(&qcow2).unwrap();
    let mut c = d.client();
    let begin = c
        .call(
            "image.upload.begin",
            args(vec![
                ("name", t("uploaded")),
                ("size", n(bytes.len() as u64)),
                ("checksum", t(&format!("md5:{}", md5_of(&qcow2)))),
            ]),
        )
        .unwrap();
    let upload = field(&begin, "upload");
    // Chunks of 256 KiB, sent out of order and one of them twice; frames stay small.
    let chunk = 256 * 1024;
    let mut offsets: Vec<usize> = (0..bytes.len()).step_by(chunk).collect();
    offsets.reverse();
    offsets.push(0);
    let send = |c: &mut Client, off: usize| {
        let end = (off + chunk).min(bytes.len());
        c.call(
            "image.upload.chunk",
            args(vec![
                ("upload", t(&upload)),
                ("offset", n(off as u64)),
                ("data", Value::Bytes(bytes[off..end].to_vec())),
            ]),
        )
    };
    // Finishing early is refused; the upload stays.
    send(&mut c, offsets[0]).unwrap();
    let early = c.call("image.upload.finish", args(vec![("upload", t(&upload))]));
    assert!(
        format!("{early:?}").contains("invalid_argument"),
        "{early:?}"
    );
    for off in &offsets {
        send(&mut c, *off).unwrap();
    }
    let past = c.call(
        "image.upload.chunk",
        args(vec![
            ("upload", t(&upload)),
            ("offset", n(bytes.len() as u64)),
            ("data", Value::Bytes(vec![1])),
        ]),
    );
    assert!(format!("{past:?}").contains("invalid_argument"), "{past:?}");
    let fin = c
        .call("image.upload.finish", args(vec![("upload", t(&upload))]))
        .unwrap();
    let done = wait_job(&d, &field(&fin, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
    let img = d.ok("image.show", vec![("image", t("uploaded"))]);
    assert_eq!(get_u64(&img, "size"), Some(64 * MIB));
    // The staging file is gone; only the base remains.
    let names: Vec<String> = std::fs::read_dir(pool.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![field(&img, "id")]);
    let s = d.ok(
        "share.create",
        vec![
            ("name", t("from-upload")),
            ("size", n(64 * MIB)),
            ("from_image", t("uploaded")),
        ],
    );
    assert_eq!(
        read_at(
            &volume(&pool, &field(sub(&s, "share"), "id")),
            10 * MIB,
            4096
        ),
        pattern(2, 4096)
    );
    // An aborted upload leaves nothing.
    let b = c
        .call(
            "image.upload.begin",
            args(vec![("name", t("dropped")), ("size", n(4096))]),
        )
        .unwrap();
    c.call(
        "image.upload.abort",
        args(vec![("upload", t(&field(&b, "upload")))]),
    )
    .unwrap();
    assert_eq!(std::fs::read_dir(pool.join("images")).unwrap().count(), 1);
}

#[test]
fn copies_on_a_pool_without_reflink_run_as_jobs() {
    // A pool on the scratch directory's filesystem (ext4 here): no reflink, so snapshots
    // and clones are full copies and answer with a job.
    let dir = scratch("copyjobs");
    let d = Daemon::start(&Layout::new(dir.path(), ""));
    let info = d.ok("pool.show", vec![("name", t("default"))]);
    assert_eq!(get(&info, "reflink"), Some(&Value::Bool(false)), "{info:?}");
    let pool = dir.path().join("state/pools/default");
    let s = d.ok(
        "share.create",
        vec![("name", t("src")), ("size", n(64 * MIB))],
    );
    let id = field(sub(&s, "share"), "id");
    write_at(&volume(&pool, &id), 20 * MIB, &pattern(9, 8192));
    let r = d.ok(
        "snapshot.create",
        vec![("share", t("src")), ("name", t("s1"))],
    );
    assert_eq!(field(sub(&r, "snapshot"), "state"), "creating");
    let done = wait_job(&d, &field(&r, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
    assert_eq!(field(sub(&done, "result"), "state"), "available");
    let snap = d.ok(
        "snapshot.show",
        vec![("snapshot", t("s1")), ("share", t("src"))],
    );
    assert_eq!(field(&snap, "state"), "available");
    let c = d.ok(
        "share.clone",
        vec![
            ("snapshot", t("s1")),
            ("share", t("src")),
            ("name", t("copy")),
        ],
    );
    let cid = field(sub(&c, "share"), "id");
    let done = wait_job(&d, &field(&c, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
    assert_eq!(
        read_at(&volume(&pool, &cid), 20 * MIB, 8192),
        pattern(9, 8192)
    );
    assert_eq!(
        field(&d.ok("share.show", vec![("share", t("copy"))]), "state"),
        "available"
    );
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
}

#[test]
fn running_out_of_space_in_the_middle_of_a_copy_rolls_it_back() {
    // An XFS without reflink, too small for a second copy of what the share holds: the
    // capacity guard lets a thin snapshot through, the copy hits ENOSPC half-way, and the
    // job fails with no_space leaving no snapshot row and no partial file.
    let xfs = Xfs::with_reflink("enospc", 400 * MIB, false);
    let d = Daemon::start(&Layout::on_xfs(&xfs, ""));
    let pool = xfs.mount.join("pool");
    let s = d.ok(
        "share.create",
        vec![("name", t("full")), ("size", n(256 * MIB))],
    );
    let id = field(sub(&s, "share"), "id");
    let vol = volume(&pool, &id);
    let chunk = pattern(5, MIB as usize);
    for i in 0..220 {
        write_at(&vol, i * MIB, &chunk);
    }
    sh(&["sync"]);
    let r = d.ok(
        "snapshot.create",
        vec![("share", t("full")), ("name", t("s1"))],
    );
    let end = wait_job(&d, &field(&r, "job"));
    assert_eq!(get_text(&end, "state"), Some("failed"), "{end:?}");
    assert_eq!(field(sub(&end, "error"), "code"), "no_space", "{end:?}");
    assert_eq!(d.ok("snapshot.list", vec![]), Value::Array(vec![]));
    assert_eq!(
        std::fs::read_dir(pool.join("snapshots")).unwrap().count(),
        0
    );
    let v = d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
    // The share is whole, and space is back for the next request.
    assert_eq!(read_at(&vol, 100 * MIB, 4096), pattern(5, 4096));
    d.ok("share.create", vec![("name", t("after")), ("size", n(MIB))]);
}

#[test]
fn uploads_are_bounded_by_count_and_by_the_pools_capacity() {
    let xfs = Xfs::new("imgbound", 1 << 30);
    let d = Daemon::start(&Layout::on_xfs(&xfs, "[images]\nmax_uploads = 2\n"));
    let pool = xfs.mount.join("pool");
    let begin = |name: &str, size: u64| {
        d.call(
            "image.upload.begin",
            vec![("name", t(name)), ("size", n(size))],
        )
    };
    let code = |r: Result<Value, shelf::client::ClientError>| match r {
        Err(shelf::client::ClientError::Remote(e)) => format!("{}: {}", e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // More than the pool holds, then two that fit only one at a time: each upload's size
    // counts against the pool like a preallocated share, with the others in progress.
    let m = code(begin("huge", 4 << 30));
    assert!(m.starts_with("no_space"), "{m}");
    let a = field(&begin("a", 600 * MIB).unwrap(), "upload");
    let m = code(begin("b", 600 * MIB));
    assert!(m.starts_with("no_space") && m.contains("upload"), "{m}");
    eprintln!("second 600 MiB upload on a 1 GiB pool: {m}");
    // Count: two at most.
    let small = field(&begin("small", 4096).unwrap(), "upload");
    let m = code(begin("third", 4096));
    assert!(m.starts_with("busy") && m.contains("max_uploads"), "{m}");
    d.ok("image.upload.abort", vec![("upload", t(&a))]);
    let b = field(&begin("b", 600 * MIB).unwrap(), "upload");
    d.ok("image.upload.abort", vec![("upload", t(&b))]);
    d.ok("image.upload.abort", vec![("upload", t(&small))]);
    assert_eq!(std::fs::read_dir(pool.join("images")).unwrap().count(), 0);

    // Bookkeeping: 4,096 chunks of 512 bytes with a gap after each, then the gaps (the
    // cost per chunk is printed, not asserted; the unit tests of upload.rs time the range
    // set alone).
    let count = 4_096u64;
    let id = field(&begin("gaps", count * 1024).unwrap(), "upload");
    let mut c = d.client();
    let mut send = |off: u64| {
        let t0 = Instant::now();
        c.call(
            "image.upload.chunk",
            args(vec![
                ("upload", t(&id)),
                ("offset", n(off)),
                ("data", Value::Bytes(vec![9u8; 512])),
            ]),
        )
        .unwrap();
        t0.elapsed()
    };
    let mut first = Duration::ZERO;
    let mut last = Duration::ZERO;
    for i in 0..count {
        let e = send(i * 1024);
        if i < 512 {
            first += e;
        } else if i >= count - 512 {
            last += e;
        }
    }
    for i in 0..count {
        send(i * 1024 + 512);
    }
    println!(
        "upload bookkeeping: first 512 gapped chunks {:?}/chunk, last 512 (4,095 ranges held) {:?}/chunk",
        first / 512,
        last / 512
    );
    let fin = d.ok("image.upload.finish", vec![("upload", t(&id))]);
    let done = wait_job(&d, &field(&fin, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
}
