//! The inspector against images made by the real `qemu-img`, and against hand-edited
//! headers for the cases `qemu-img` will not make.

use super::*;
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 1 << 40;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
}

fn check(path: &Path, declared: Option<ImageFormat>) -> Result<Inspected, Refused> {
    let bytes = std::fs::read(path).unwrap();
    inspect(&mut bytes.as_slice(), declared, LIMIT)
}

fn create(dir: &Path, name: &str, fmt: &str, opts: &[&str], size: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut args = vec!["create", "-q", "-f", fmt];
    args.extend_from_slice(opts);
    args.push(p.to_str().unwrap());
    if !size.is_empty() {
        args.push(size);
    }
    qemu_img(&args);
    p
}

fn refused(r: Result<Inspected, Refused>, needle: &str) {
    match r {
        Err(Refused(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        Ok(i) => panic!("accepted {i:?}, expected a refusal with {needle:?}"),
    }
}

#[test]
fn clean_images_of_every_format_are_accepted_with_their_size() {
    let d = tempfile::tempdir().unwrap();
    for (fmt, opts) in [
        ("qcow2", &[][..]),
        ("qcow2", &["-o", "compat=0.10"][..]),
        ("vmdk", &[][..]),
        ("vmdk", &["-o", "subformat=streamOptimized"][..]),
        ("vdi", &[][..]),
        ("vdi", &["-o", "static=on"][..]),
        ("vpc", &[][..]),
        ("vpc", &["-o", "subformat=fixed"][..]),
        ("qed", &[][..]),
        ("vhdx", &[][..]),
        ("vhdx", &["-o", "subformat=fixed"][..]),
    ] {
        let p = create(d.path(), &format!("x.{fmt}"), fmt, opts, "64M");
        let f = ImageFormat::parse(fmt).unwrap();
        // A fixed VHD has no header, only a footer: qemu probes it as raw, and so do we.
        let fixed = opts.contains(&"subformat=fixed");
        let i = check(&p, fixed.then_some(f)).unwrap_or_else(|e| panic!("{fmt} {opts:?}: {e}"));
        assert_eq!(i.format, f, "{opts:?}");
        assert!(
            i.virtual_size >= 64 * MIB && i.virtual_size < 65 * MIB,
            "{i:?}"
        );
        check(&p, Some(f)).unwrap();
        std::fs::remove_file(&p).unwrap();
    }
    let raw = d.path().join("r.raw");
    std::fs::write(&raw, vec![7u8; 4096]).unwrap();
    assert_eq!(
        check(&raw, Some(ImageFormat::Raw)).unwrap(),
        Inspected {
            format: ImageFormat::Raw,
            virtual_size: 4096
        }
    );
}

#[test]
fn images_naming_other_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let secret = d.path().join("secret");
    std::fs::write(&secret, b"secret").unwrap();
    let s = secret.to_str().unwrap();
    let backed = create(d.path(), "b.qcow2", "qcow2", &["-b", s, "-F", "raw"], "1M");
    refused(check(&backed, None), "backing file");
    let v2 = create(
        d.path(),
        "b2.qcow2",
        "qcow2",
        &["-o", "compat=0.10", "-b", s, "-F", "raw"],
        "1M",
    );
    refused(check(&v2, None), "backing file");
    let data = d.path().join("data.raw");
    let df = create(
        d.path(),
        "df.qcow2",
        "qcow2",
        &["-o", &format!("data_file={}", data.display())],
        "1M",
    );
    refused(check(&df, None), "external data file");
    let qed = create(d.path(), "b.qed", "qed", &["-b", s, "-F", "raw"], "1M");
    refused(check(&qed, None), "backing file");
    let parent = create(d.path(), "parent.vmdk", "vmdk", &[], "1M");
    let p = parent.to_str().unwrap();
    let vmdk = create(d.path(), "b.vmdk", "vmdk", &["-b", p, "-F", "vmdk"], "");
    refused(check(&vmdk, None), "parent");
    let flat = create(
        d.path(),
        "flat.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicFlat"],
        "1M",
    );
    refused(check(&flat, None), "vmdk (a text descriptor");
    refused(
        check(&flat, Some(ImageFormat::Vmdk)),
        "vmdk (a text descriptor",
    );
}

#[test]
fn a_hand_edited_qcow2_is_refused_for_what_it_hides() {
    let d = tempfile::tempdir().unwrap();
    let p = create(d.path(), "x.qcow2", "qcow2", &[], "1M");
    let clean = std::fs::read(&p).unwrap();
    let edit = |off: usize, bytes: &[u8]| {
        let mut b = clean.clone();
        b[off..off + bytes.len()].copy_from_slice(bytes);
        inspect(&mut b.as_slice(), None, LIMIT)
    };
    // The data-file bit without the extension; an unknown incompatible bit; a backing
    // file by size alone; an unknown header extension; the data-file extension alone.
    refused(edit(72, &4u64.to_be_bytes()), "external data file");
    refused(edit(72, &2u64.to_be_bytes()), "corrupt");
    refused(
        edit(72, &(1u64 << 40).to_be_bytes()),
        "unknown incompatible",
    );
    refused(edit(16, &5u32.to_be_bytes()), "backing file");
    let ext = be32(&clean, 100) as usize;
    refused(
        edit(ext, &0x1234_5678u32.to_be_bytes()),
        "unknown header extension",
    );
    refused(
        edit(ext, &QCOW2_EXT_DATA_FILE.to_be_bytes()),
        "external data file",
    );
    refused(
        edit(ext, &QCOW2_EXT_BACKING_FORMAT.to_be_bytes()),
        "backing",
    );
    refused(edit(4, &1u32.to_be_bytes()), "qcow (not version 2 or 3)");
}

#[test]
fn declared_formats_must_match_and_sizes_are_bounded() {
    let d = tempfile::tempdir().unwrap();
    let q = create(d.path(), "x.qcow2", "qcow2", &[], "1G");
    refused(
        check(&q, Some(ImageFormat::Raw)),
        "declared raw but it is a qcow2",
    );
    refused(check(&q, Some(ImageFormat::Vmdk)), "declared vmdk");
    let raw = d.path().join("r.raw");
    std::fs::write(&raw, vec![1u8; 8192]).unwrap();
    refused(
        check(&raw, Some(ImageFormat::Qcow2)),
        "declared qcow2 but it is a raw",
    );
    let bytes = std::fs::read(&q).unwrap();
    refused(
        inspect(&mut bytes.as_slice(), None, 512 * MIB),
        "over the limit",
    );
    // A LUKS header (magic and version 1) on 1 MiB, not `qemu-img create -f luks`, whose
    // key-derivation benchmark fails on this VM in most runs ("Unable to get accurate CPU
    // usage"); the format is told by the header (tests/hostile_images.rs has a whole one).
    let luks = d.path().join("x.luks");
    let mut header = vec![0u8; 1 << 20];
    header[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x01");
    std::fs::write(&luks, header).unwrap();
    refused(check(&luks, None), "its format is luks");
    refused(check(&luks, Some(ImageFormat::Raw)), "its format is luks");
    let mut iso = vec![0u8; 0x9000];
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    refused(
        inspect(&mut iso.as_slice(), Some(ImageFormat::Raw), LIMIT),
        "iso",
    );
}

#[test]
fn vmdk_descriptors_are_read_strictly() {
    let ok = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\nRW 2048 SPARSE \"x.vmdk\"\nddb.virtualHWVersion = \"4\"\n";
    check_vmdk_descriptor(ok).unwrap();
    for (bad, needle) in [
        (ok.replace("monolithicSparse", "monolithicFlat"), "of type"),
        (ok.replace("SPARSE", "FLAT"), "FLAT extent"),
        (format!("{ok}RW 2048 SPARSE \"/etc/shadow\"\n"), "2 extents"),
        (ok.replace("parentCID=ffffffff", "parentCID=1"), "parent"),
        (
            format!("{ok}parentFileNameHint=\"/etc/shadow\"\n"),
            "parent",
        ),
        (format!("{ok}bogus=1\n"), "unknown key"),
        (format!("{ok}just words\n"), "does not understand"),
    ] {
        refused(
            check_vmdk_descriptor(&bad).map(|_| Inspected {
                format: ImageFormat::Vmdk,
                virtual_size: 1,
            }),
            needle,
        );
    }
}

#[test]
fn a_hand_edited_vhdx_is_refused_for_a_parent_an_unknown_region_or_a_log() {
    let d = tempfile::tempdir().unwrap();
    let p = create(d.path(), "x.vhdx", "vhdx", &[], "8M");
    let clean = std::fs::read(&p).unwrap();
    inspect(&mut clean.as_slice(), Some(ImageFormat::Vhdx), LIMIT).unwrap();
    let find = |needle: &[u8]| {
        clean
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let edited = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = clean.clone();
        f(&mut b);
        inspect(&mut b.as_slice(), None, LIMIT)
    };
    // The file parameters' HasParent flag.
    let meta = find(b"metadata") as u64;
    let params_id = super::vhdx::guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
    let entry = (meta as usize + 32..meta as usize + 65536)
        .step_by(32)
        .find(|at| clean[*at..*at + 16] == params_id)
        .unwrap();
    let off = meta as usize
        + u32::from_le_bytes(clean[entry + 16..entry + 20].try_into().unwrap()) as usize;
    refused(edited(&|b| b[off + 4] |= 2), "differencing vhdx");
    // A region named by neither the BAT nor the metadata GUID, in the second table only.
    let region = 256 * 1024 + 16;
    refused(edited(&|b| b[region] ^= 0xff), "region shelf does not know");
    // A log GUID in the first header.
    refused(edited(&|b| b[64 * 1024 + 48] = 1), "log to replay");
}

proptest::proptest! {
    /// Whatever the bytes, the inspector answers (never panics, never loops) — also for
    /// bytes that start with each format's magic.
    #[test]
    fn any_bytes_get_an_answer(
        magic in 0usize..8,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
        declared in 0usize..8,
    ) {
        let prefixes: [&[u8]; 8] = [
            b"", b"QFI\xfb\0\0\0\x03", b"KDMV\x01\0\0\0", b"conectix", b"QED\0",
            b"vhdxfile", b"# Disk DescriptorFile\n", b"QFI\xfb\0\0\0\x02",
        ];
        let mut bytes = prefixes[magic].to_vec();
        bytes.extend_from_slice(&body);
        let declared = FORMATS.get(declared).copied();
        let _ = inspect(&mut bytes.as_slice(), declared, LIMIT);
    }
}

/// One clean image of each format that has headers, made once by `qemu-img`.
fn clean_images() -> &'static Vec<Vec<u8>> {
    static IMAGES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    IMAGES.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        ["qcow2", "vmdk", "vdi", "vpc", "qed", "vhdx"]
            .iter()
            .map(|f| std::fs::read(create(d.path(), f, f, &[], "4M")).unwrap())
            .collect()
    })
}

proptest::proptest! {
    /// Real images with bytes changed anywhere still get an answer (no panic, no loop),
    /// and what is accepted stays within the limit.
    #[test]
    fn mutated_real_images_get_an_answer(
        which in 0usize..6,
        edits in proptest::collection::vec((0.0f64..1.0, proptest::num::u8::ANY), 1..16),
        head in proptest::bool::ANY,
    ) {
        let mut bytes = clean_images()[which].clone();
        for (at, b) in edits {
            // Half the cases edit the first 4 KiB, where most header fields are.
            let span = if head { 4096.min(bytes.len()) } else { bytes.len() };
            let i = ((at * span as f64) as usize).min(span - 1);
            bytes[i] = b;
        }
        if let Ok(i) = inspect(&mut bytes.as_slice(), None, LIMIT) {
            proptest::prop_assert!(i.virtual_size <= LIMIT);
        }
    }
}

/// A real sparse VMDK from `qemu-img` and its embedded descriptor text (at 0x200, up to
/// the first NUL).
fn clean_vmdk(dir: &Path) -> (Vec<u8>, String) {
    let p = create(dir, "clean.vmdk", "vmdk", &[], "1M");
    let bytes = std::fs::read(p).unwrap();
    let area = &bytes[512..512 * 21];
    let end = area.iter().position(|&b| b == 0).unwrap();
    (
        bytes.clone(),
        String::from_utf8(area[..end].to_vec()).unwrap(),
    )
}

/// The header points at a clean copy of the descriptor further on; the one at 0x200,
/// which qemu reads, names a parent.
fn vmdk_with_moved_descriptor(dir: &Path, parent: &str) -> Vec<u8> {
    let (mut bytes, desc) = clean_vmdk(dir);
    let hostile = format!("{desc}parentFileNameHint=\"{parent}\"\n");
    let sector = 1 + hostile.len().div_ceil(512);
    assert!(
        sector * 512 + desc.len() < 21 * 512,
        "fits before the grain directory"
    );
    bytes[512..512 * 21].fill(0);
    bytes[512..512 + hostile.len()].copy_from_slice(hostile.as_bytes());
    bytes[sector * 512..sector * 512 + desc.len()].copy_from_slice(desc.as_bytes());
    bytes[28..36].copy_from_slice(&(sector as u64).to_le_bytes());
    bytes
}

/// The header says the descriptor is one sector; the hint starts in a comment in that
/// sector and goes on past byte 512 with no NUL in between.
fn vmdk_with_hint_past_desc_size(dir: &Path, parent: &str) -> Vec<u8> {
    let (mut bytes, desc) = clean_vmdk(dir);
    let word = "parentFileNameHint";
    let split = 8; // "parentFi" in the first sector, "leNameHint..." in the next
    let pad = 512 - split - desc.len() - 1;
    let text = format!("{desc}#{}{word}=\"{parent}\"\n", " ".repeat(pad));
    assert_eq!(&text[512 - split..512], &word[..split]);
    bytes[512..512 * 21].fill(0);
    bytes[512..512 + text.len()].copy_from_slice(text.as_bytes());
    bytes[36..44].copy_from_slice(&1u64.to_le_bytes());
    bytes
}

#[test]
fn a_vmdk_parent_hidden_from_the_header_descriptor_fields_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (clean, _) = clean_vmdk(d.path());
    inspect(&mut clean.as_slice(), Some(ImageFormat::Vmdk), LIMIT).unwrap();
    let db = "/var/lib/shelf/shelf.db";
    let moved = vmdk_with_moved_descriptor(d.path(), db);
    refused(inspect(&mut moved.as_slice(), None, LIMIT), "sector 2");
    // With the header put back, the descriptor qemu reads is the one refused.
    let mut back = moved.clone();
    back[28..36].copy_from_slice(&1u64.to_le_bytes());
    refused(inspect(&mut back.as_slice(), None, LIMIT), "with a parent");
    let split = vmdk_with_hint_past_desc_size(d.path(), db);
    refused(
        inspect(&mut split.as_slice(), Some(ImageFormat::Vmdk), LIMIT),
        "with a parent",
    );
    // The word anywhere in the text qemu searches counts, not only as a key.
    let mut in_value = clean.clone();
    let at = 512 + in_value[512..].iter().position(|&b| b == 0).unwrap();
    let line = format!("ddb.comment = \"parentFileNameHint=\"{db}\"\"\n");
    in_value[at..at + line.len()].copy_from_slice(line.as_bytes());
    refused(
        inspect(&mut in_value.as_slice(), None, LIMIT),
        "with a parent",
    );
    // After the first NUL qemu stops searching, and so does the inspector.
    let mut after_nul = clean.clone();
    let line = format!("parentFileNameHint=\"{db}\"\n");
    after_nul[at + 1..at + 1 + line.len()].copy_from_slice(line.as_bytes());
    inspect(&mut after_nul.as_slice(), None, LIMIT).unwrap();
    // A zero capacity makes qemu open the descriptor as a descriptor file: refused.
    let mut zero = clean;
    zero[12..20].fill(0);
    refused(
        inspect(&mut zero.as_slice(), None, LIMIT),
        "virtual size is 0",
    );
}
