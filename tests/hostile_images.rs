//! Hostile images against a real shelfd (docs/security.md §1): images made by the real
//! `qemu-img` (or written by hand where it will not make them) that name a file of the
//! appliance as a backing file, an external data file or a VMDK extent, that claim another
//! format than they are, that describe a disk larger than the pool allows, or that are in
//! a format shelf does not inspect. Each is refused with `invalid_argument` before a job
//! starts, leaving no file and no row, and no share can be made from it. A second test
//! bypasses the inspection (debug builds only) and shows that Landlock alone stops
//! `qemu-img` from reading the files the image names. A third tries the import directory
//! rules: only beneath `[images] import_dirs`, no symlink, regular files only.

mod common;

use std::path::{Path, PathBuf};

use ciborium::Value;
use common::*;
use shelf::client::{args, get_text, Client};

const MIB: u64 = 1 << 20;
const MARKER: &[u8] = b"SHELF-SECRET-MARKER-0123456789";

fn qemu_img(argv: &[&str]) {
    let mut all = vec!["qemu-img"];
    all.extend_from_slice(argv);
    sh(&all);
}

/// A LUKS image at `p`, 1 MiB: a LUKS1 header as cryptsetup lays it out (magic, version,
/// cipher, mode, hash, payload offset, key size, digest iterations, UUID, eight disabled
/// key slots), then zeros. Not made by `qemu-img create -f luks`: that times its key
/// derivation by the thread's CPU clock and, on this VM, fails in most runs with "Unable
/// to get accurate CPU usage" (five tries in a row, in one run of five). What is tested is
/// that a LUKS image is refused, which shelf tells by its header.
fn luks_image(p: &Path) {
    let mut h = vec![0u8; 1 << 20];
    h[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x01");
    for (at, text) in [(8, "aes"), (40, "xts-plain64"), (72, "sha256")] {
        h[at..at + text.len()].copy_from_slice(text.as_bytes());
    }
    h[104..108].copy_from_slice(&4096u32.to_be_bytes());
    h[108..112].copy_from_slice(&64u32.to_be_bytes());
    h[164..168].copy_from_slice(&1000u32.to_be_bytes());
    let uuid = "5f0c2d9e-0000-4000-8000-000000000001";
    h[168..168 + uuid.len()].copy_from_slice(uuid.as_bytes());
    for slot in 0..8 {
        let at = 208 + slot * 48;
        h[at..at + 4].copy_from_slice(&0x0000_DEADu32.to_be_bytes());
        h[at + 44..at + 48].copy_from_slice(&4000u32.to_be_bytes());
    }
    std::fs::write(p, h).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A file standing for the appliance's secrets: the marker all over 1 MiB.
fn make_secret(path: &Path) {
    let mut bytes = Vec::new();
    while bytes.len() < MIB as usize {
        bytes.extend_from_slice(MARKER);
    }
    bytes.truncate(MIB as usize);
    std::fs::write(path, bytes).unwrap();
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// Whether any file under `dir` holds the marker.
fn marker_under(dir: &Path) -> Option<PathBuf> {
    files_under(dir).into_iter().find(|f| {
        let b = std::fs::read(f).unwrap_or_default();
        b.windows(MARKER.len()).any(|w| w == MARKER)
    })
}

/// Upload `bytes` and finish; the finish's result.
fn upload(d: &Daemon, name: &str, bytes: &[u8], format: Option<&str>) -> Result<Value, String> {
    let mut c: Client = d.client();
    let mut a = vec![("name", t(name)), ("size", n(bytes.len() as u64))];
    if let Some(f) = format {
        a.push(("format", t(f)));
    }
    let b = c.call("image.upload.begin", args(a)).unwrap();
    let id = field(&b, "upload");
    for (i, chunk) in bytes.chunks(256 * 1024).enumerate() {
        c.call(
            "image.upload.chunk",
            args(vec![
                ("upload", t(&id)),
                ("offset", n((i * 256 * 1024) as u64)),
                ("data", Value::Bytes(chunk.to_vec())),
            ]),
        )
        .unwrap();
    }
    c.call("image.upload.finish", args(vec![("upload", t(&id))]))
        .map_err(|e| e.to_string())
}

/// The hostile images, made in `src` (the import directory); `elsewhere` holds the files
/// they name. Each: (name, path, declared format, what the refusal must say).
fn hostile_images(
    src: &Path,
    elsewhere: &Path,
    state: &Path,
) -> Vec<(&'static str, PathBuf, Option<&'static str>, &'static str)> {
    let secret = elsewhere.join("secret.raw");
    make_secret(&secret);
    let db = state.join("shelf.db");
    let mut v = Vec::new();
    let mut qcow2 = |name: &'static str, opts: &[&str], declared, why| {
        let p = src.join(format!("{name}.img"));
        let mut a = vec!["create", "-q", "-f", "qcow2"];
        a.extend_from_slice(opts);
        a.extend_from_slice(&[s(&p), "1M"]);
        qemu_img(&a);
        v.push((name, p, declared, why));
    };
    qcow2(
        "backing-v3",
        &["-b", s(&secret), "-F", "raw"],
        Some("qcow2"),
        "backing file",
    );
    qcow2(
        "backing-auto",
        &["-b", s(&secret), "-F", "raw"],
        None,
        "backing file",
    );
    qcow2(
        "backing-v2",
        &["-o", "compat=0.10", "-b", s(&secret), "-F", "raw"],
        Some("qcow2"),
        "backing file",
    );
    qcow2(
        "backing-db",
        &["-b", s(&db), "-F", "raw"],
        None,
        "backing file",
    );
    qcow2(
        "backing-shadow",
        &["-b", "/etc/shadow", "-F", "raw"],
        None,
        "backing file",
    );
    // A backing file written into the header by hand, without a backing-format extension
    // (qemu-img would probe its format).
    qcow2("backing-patched", &[], None, "backing file");
    let patched = src.join("backing-patched.img");
    let name = s(&secret).as_bytes().to_vec();
    write_at(&patched, 2048, &name);
    write_at(&patched, 8, &2048u64.to_be_bytes());
    write_at(&patched, 16, &(name.len() as u32).to_be_bytes());
    let data = elsewhere.join("data.raw");
    qcow2(
        "data-file",
        &["-o", &format!("data_file={},data_file_raw=on", s(&data))],
        Some("qcow2"),
        "external data file",
    );
    make_secret(&data);
    qcow2(
        "declared-raw",
        &[],
        Some("raw"),
        "declared raw but it is a qcow2",
    );
    qcow2(
        "declared-vmdk",
        &[],
        Some("vmdk"),
        "declared vmdk but it is a qcow2",
    );
    let p = src.join("huge.img");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "100G"]);
    v.push(("huge", p, None, "over the limit"));
    let p = src.join("huge.raw");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(30 << 30)
        .unwrap();
    v.push(("huge-raw", p, Some("raw"), "over the limit"));
    // QED with a backing file.
    let p = src.join("backing.qed");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qed",
        "-b",
        s(&secret),
        "-F",
        "raw",
        s(&p),
        "1M",
    ]);
    v.push(("backing-qed", p, Some("qed"), "qed with a backing file"));
    // VMDK: a sparse one with a parent; descriptors naming the secret as extents.
    let parent = elsewhere.join("parent.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", s(&parent), "1M"]);
    let p = src.join("child.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        s(&parent),
        "-F",
        "vmdk",
        s(&p),
    ]);
    v.push(("vmdk-parent", p, Some("vmdk"), "vmdk with a parent"));
    // A real sparse VMDK whose header hides the parent from a reader that trusts its
    // descriptor fields; qemu reads the descriptor at 0x200 whatever they say.
    let base = src.join("base.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", s(&base), "1M"]);
    let clean = std::fs::read(&base).unwrap();
    std::fs::remove_file(&base).unwrap();
    let area = &clean[512..512 * 21];
    let desc =
        String::from_utf8(area[..area.iter().position(|&b| b == 0).unwrap()].to_vec()).unwrap();
    // desc_offset points at a clean copy; the descriptor at 0x200 names the database.
    let hostile = format!("{desc}parentFileNameHint=\"{}\"\n", s(&db));
    let sector = 1 + hostile.len().div_ceil(512);
    let p = src.join("moved.vmdk");
    std::fs::write(&p, &clean).unwrap();
    write_at(&p, 512, &vec![0u8; 512 * 20]);
    write_at(&p, 512, hostile.as_bytes());
    write_at(&p, sector as u64 * 512, desc.as_bytes());
    write_at(&p, 28, &(sector as u64).to_le_bytes());
    v.push((
        "vmdk-moved-descriptor",
        p,
        Some("vmdk"),
        "not 1 where qemu reads it",
    ));
    // desc_size=1; the hint starts in a comment of that sector and runs on past byte 512.
    let pad = 512 - 8 - desc.len() - 1;
    let text = format!(
        "{desc}#{}parentFileNameHint=\"{}\"\n",
        " ".repeat(pad),
        s(&db)
    );
    let p = src.join("split-hint.vmdk");
    std::fs::write(&p, &clean).unwrap();
    write_at(&p, 512, &vec![0u8; 512 * 20]);
    write_at(&p, 512, text.as_bytes());
    write_at(&p, 36, &1u64.to_le_bytes());
    v.push(("vmdk-hint-past-desc-size", p, None, "vmdk with a parent"));
    for (name, create_type, extent) in [
        ("vmdk-flat", "monolithicFlat", "FLAT"),
        ("vmdk-2gb", "twoGbMaxExtentFlat", "FLAT"),
        ("vmdk-sparse-text", "monolithicSparse", "SPARSE"),
    ] {
        let p = src.join(format!("{name}.vmdk"));
        std::fs::write(
            &p,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                 createType=\"{create_type}\"\n\n# Extent description\n\
                 RW 2048 {extent} \"{}\" 0\n\nddb.virtualHWVersion = \"4\"\n",
                s(&secret)
            ),
        )
        .unwrap();
        v.push((name, p, Some("vmdk"), "text descriptor naming extent files"));
    }
    let p = src.join("split.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        s(&p),
        "1M",
    ]);
    v.push(("vmdk-split", p, None, "text descriptor naming extent files"));
    // Formats shelf does not inspect, and an ISO claimed to be raw.
    let p = src.join("x.vhdx");
    qemu_img(&["create", "-q", "-f", "vhdx", s(&p), "1M"]);
    v.push((
        "vhdx-declared-vpc",
        p,
        Some("vpc"),
        "declared vpc but it is a vhdx",
    ));
    let p = src.join("x.luks");
    luks_image(&p);
    v.push(("luks", p, Some("raw"), "its format is luks"));
    let p = src.join("x.iso");
    let mut iso = vec![0u8; 0x10000];
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    std::fs::write(&p, iso).unwrap();
    v.push(("iso", p, Some("raw"), "its format is iso"));
    v
}

#[test]
fn hostile_images_are_refused_before_any_tool_reads_them() {
    let xfs = Xfs::new("hostile", 1 << 30);
    let src = scratch("hostile-src");
    let elsewhere = scratch("hostile-elsewhere");
    let extra = format!("[images]\nimport_dirs = [{:?}]\n", s(src.path()));
    let d = Daemon::start(&Layout::on_xfs(&xfs, &extra));
    let pool = xfs.mount.join("pool");
    let images = hostile_images(src.path(), elsewhere.path(), &d.state);
    assert!(images.len() >= 20, "{} variants", images.len());
    for (name, path, declared, why) in &images {
        let mut a = vec![("name", t(name)), ("source", t(s(path)))];
        if let Some(f) = declared {
            a.push(("format", t(f)));
        }
        let m = d.err("image.import", a, "invalid_argument");
        assert!(m.contains(why), "{name}: {m:?} does not say {why:?}");
        eprintln!("{name}: {m}");
        d.err(
            "share.create",
            vec![("name", t(name)), ("size", n(MIB)), ("from_image", t(name))],
            "not_found",
        );
    }
    // Uploads are inspected the same way: a qcow2 sent as raw, a backing file sent bare.
    let qcow2 = std::fs::read(&images[0].1).unwrap();
    for (name, format) in [("up-raw", Some("raw")), ("up-auto", None)] {
        let e = upload(&d, name, &qcow2, format).unwrap_err();
        assert!(e.contains("invalid_argument"), "{name}: {e}");
    }
    let clean = src.path().join("clean.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&clean), "1M"]);
    let e = upload(
        &d,
        "up-declared",
        &std::fs::read(&clean).unwrap(),
        Some("raw"),
    )
    .unwrap_err();
    assert!(e.contains("declared raw but it is a qcow2"), "{e}");
    for f in ["luks", "iso9660", "host_device"] {
        let m = d.err(
            "image.import",
            vec![("name", t("x")), ("source", t(s(&clean))), ("format", t(f))],
            "invalid_argument",
        );
        assert!(m.contains("is not one of"), "{m}");
    }
    // Nothing is left: no row, no job, no file, and the marker is nowhere in the pool.
    assert_eq!(d.ok("image.list", vec![]), Value::Array(vec![]));
    assert_eq!(d.ok("job.list", vec![]), Value::Array(vec![]));
    assert_eq!(files_under(&pool.join("images")), Vec::<PathBuf>::new());
    assert_eq!(marker_under(&pool), None);
    // Clean images of every format still import, through the confined qemu-img.
    for fmt in ["qcow2", "vmdk", "vdi", "vpc", "qed", "vhdx"] {
        let p = src.path().join(format!("clean-{fmt}.img"));
        qemu_img(&["create", "-q", "-f", fmt, s(&p), "4M"]);
        let r = d.ok(
            "image.import",
            vec![("name", t(&format!("clean-{fmt}"))), ("source", t(s(&p)))],
        );
        let done = wait_job(&d, &field(&r, "job"));
        assert_eq!(get_text(&done, "state"), Some("done"), "{fmt}: {done:?}");
        assert_eq!(field(sub(&done, "result"), "source_format"), fmt);
    }
}

#[test]
fn the_confinement_alone_stops_a_backing_file_debug_build_without_inspection() {
    let xfs = Xfs::new("confined", 1 << 30);
    let src = scratch("confined-src");
    let elsewhere = scratch("confined-elsewhere");
    let extra = format!("[images]\nimport_dirs = [{:?}]\n", s(src.path()));
    let d = Daemon::start_with_env(
        &Layout::on_xfs(&xfs, &extra),
        &[("SHELF_UNSAFE_SKIP_IMAGE_INSPECTION", "1")],
    );
    let pool = xfs.mount.join("pool");
    let images = hostile_images(src.path(), elsewhere.path(), &d.state);
    // The images that name a file and that qemu-img would read, with the format fixed.
    let mut tried = 0;
    for (name, path, declared, _) in &images {
        let format = match (*name, declared) {
            ("declared-raw" | "declared-vmdk" | "huge" | "huge-raw" | "luks" | "iso", _) => {
                continue
            }
            // Its extents are named relative to the descriptor, which qemu-img sees as
            // /dev/fd/N: they are not found at all; qemu-img itself refuses a text
            // descriptor of type monolithicSparse; the vhdx names nothing.
            ("vhdx-declared-vpc" | "vmdk-split" | "vmdk-sparse-text", _) => continue,
            (_, Some(f)) => *f,
            (n, None) if n.starts_with("vmdk") => "vmdk",
            (_, None) => "qcow2",
        };
        let r = d.ok(
            "image.import",
            vec![
                ("name", t(name)),
                ("source", t(s(path))),
                ("format", t(format)),
            ],
        );
        let end = wait_job(&d, &field(&r, "job"));
        assert_eq!(get_text(&end, "state"), Some("failed"), "{name}: {end:?}");
        let msg = field(sub(&end, "error"), "message");
        // The kernel refused the very file the image names.
        let named = [
            elsewhere.path().join("secret.raw"),
            elsewhere.path().join("data.raw"),
            elsewhere.path().join("parent.vmdk"),
            d.state.join("shelf.db"),
            PathBuf::from("/etc/shadow"),
        ];
        assert!(
            named
                .iter()
                .any(|p| msg.contains(&format!("Could not open '{}': Permission denied", s(p)))),
            "{name}: {msg}"
        );
        eprintln!("{name} ({format}), confined: {msg}");
        tried += 1;
    }
    assert_eq!(tried, 13, "images tried against the confinement");
    assert!(d.log_text().contains("inspection bypassed"));
    assert!(d.log_text().contains("qemu-img runs confined"));
    assert_eq!(d.ok("image.list", vec![]), Value::Array(vec![]));
    assert_eq!(files_under(&pool.join("images")), Vec::<PathBuf>::new());
    assert_eq!(marker_under(&pool), None);
    // The bypass is real and the confinement lets a clean conversion through.
    let clean = src.path().join("clean.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&clean), "1M"]);
    let r = d.ok(
        "image.import",
        vec![
            ("name", t("clean")),
            ("source", t(s(&clean))),
            ("format", t("qcow2")),
        ],
    );
    let done = wait_job(&d, &field(&r, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
}

#[test]
fn import_sources_are_opened_only_beneath_an_import_directory() {
    let outside = scratch("importdir-outside");
    let secret = outside.path().join("secret.raw");
    make_secret(&secret);
    let import = |d: &Daemon, source: &Path| {
        d.err(
            "image.import",
            vec![("name", t("x")), ("source", t(s(source)))],
            "invalid_argument",
        )
    };
    // None configured (the default): every path is refused, uploads still work.
    let xfs = Xfs::new("importdir", 1 << 30);
    let base = scratch("importdir-none");
    let d = Daemon::start(&Layout::new(base.path(), ""));
    let m = import(&d, &secret);
    assert!(m.contains("no import directories are configured"), "{m}");
    let fin = upload(&d, "up", &vec![5u8; 8192], Some("raw")).unwrap();
    let done = wait_job(&d, &field(&fin, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
    drop(d);

    let src = scratch("importdir-src");
    let dir = src.path();
    let extra = format!("[images]\nimport_dirs = [{:?}]\n", s(dir));
    let d = Daemon::start(&Layout::on_xfs(&xfs, &extra));
    let pool = xfs.mount.join("pool");
    std::os::unix::fs::symlink(&secret, dir.join("link.raw")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("sub")).unwrap();
    std::fs::write(dir.join("inside.raw"), vec![1u8; 4096]).unwrap();
    std::os::unix::fs::symlink(dir.join("inside.raw"), dir.join("inner-link.raw")).unwrap();
    std::fs::create_dir(dir.join("d")).unwrap();
    for (source, why) in [
        (secret.clone(), "not in an import directory"),
        (PathBuf::from("/etc/shadow"), "not in an import directory"),
        (dir.join("link.raw"), "symlink"),
        (dir.join("sub/secret.raw"), "symlink"),
        (dir.join("inner-link.raw"), "symlink"),
        (
            dir.join("../")
                .join(outside.path().file_name().unwrap())
                .join("secret.raw"),
            "leads out",
        ),
        (dir.join("d"), "not a regular file"),
        (dir.to_path_buf(), "not in an import directory"),
        (dir.join("missing.raw"), "No such file"),
    ] {
        let m = import(&d, &source);
        assert!(
            m.contains(why),
            "{}: {m:?} does not say {why:?}",
            source.display()
        );
        eprintln!("{}: {m}", source.display());
    }
    // A prefix that is not a path component does not count as inside.
    let sibling = PathBuf::from(format!("{}-x", s(dir)));
    std::fs::create_dir(&sibling).unwrap();
    std::fs::write(sibling.join("f.raw"), [1u8; 512]).unwrap();
    let m = import(&d, &sibling.join("f.raw"));
    std::fs::remove_dir_all(&sibling).unwrap();
    assert!(m.contains("not in an import directory"), "{m}");
    assert_eq!(d.ok("image.list", vec![]), Value::Array(vec![]));
    assert_eq!(marker_under(&pool), None);
    let r = d.ok(
        "image.import",
        vec![
            ("name", t("inside")),
            ("source", t(s(&dir.join("inside.raw")))),
        ],
    );
    let done = wait_job(&d, &field(&r, "job"));
    assert_eq!(get_text(&done, "state"), Some("done"), "{done:?}");
}
