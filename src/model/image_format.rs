//! Inspection of a tenant's disk image before any tool interprets it (the defence against
//! CVE-2024-32498 / OSSA-2024-001, in the spirit of oslo.utils' `format_inspector`, but
//! strict: what is not understood is refused).
//!
//! Input trust: the bytes are the tenant's. They may claim any format, name any file of
//! the appliance as a backing file, external data file or VMDK extent, or announce any
//! virtual size. This module reads only the bytes it is given (through [`ImageBytes`]),
//! at most [`MAX_READ`] of them, and answers either the format and virtual size or the
//! reason the image is refused.

use std::fmt;

/// Most bytes the inspector reads from one image (headers, extensions, descriptors).
pub const MAX_READ: usize = 4 << 20;

/// The bytes of an image, read at offsets (a file, or a slice in tests).
pub trait ImageBytes {
    /// The image's length in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fill `buf` from `offset`; fewer bytes only at the end of the image.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, String>;
}

impl ImageBytes for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, String> {
        let start = (offset.min(<[u8]>::len(self) as u64)) as usize;
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// A format shelf inspects fully and converts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Plain bytes.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware, `monolithicSparse` or `streamOptimized` only.
    Vmdk,
    /// VirtualBox, dynamic or static.
    Vdi,
    /// Virtual PC / VHD, fixed or dynamic.
    Vpc,
    /// QEMU enhanced disk.
    Qed,
    /// Hyper-V, fixed or dynamic (no parent).
    Vhdx,
}

/// Every format [`inspect`] accepts, by `qemu-img` name.
pub const FORMATS: &[ImageFormat] = &[
    ImageFormat::Raw,
    ImageFormat::Qcow2,
    ImageFormat::Vmdk,
    ImageFormat::Vdi,
    ImageFormat::Vpc,
    ImageFormat::Qed,
    ImageFormat::Vhdx,
];

impl ImageFormat {
    /// The `qemu-img -f` name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vdi => "vdi",
            ImageFormat::Vpc => "vpc",
            ImageFormat::Qed => "qed",
            ImageFormat::Vhdx => "vhdx",
        }
    }

    /// Parse a `qemu-img` format name.
    pub fn parse(name: &str) -> Option<ImageFormat> {
        FORMATS.iter().copied().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What inspection found in an acceptable image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// The format the bytes are in.
    pub format: ImageFormat,
    /// The disk size the image describes, in bytes.
    pub virtual_size: u64,
}

/// Why an image is refused (shown to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image refused: {0}")]
pub struct Refused(pub String);

pub(super) fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// What the first bytes say the image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Known(ImageFormat),
    /// A format shelf does not inspect (named for the message).
    Other(&'static str),
}

/// Read up to `n` bytes at `offset` (fewer at the end of the image).
pub(super) fn read(src: &mut dyn ImageBytes, offset: u64, n: usize) -> Result<Vec<u8>, Refused> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = src
            .read_at(offset + got as u64, &mut buf[got..])
            .map_err(|e| Refused(format!("cannot read the image: {e}")))?;
        if k == 0 {
            break;
        }
        got += k;
    }
    buf.truncate(got);
    Ok(buf)
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Recognise the format from its magic. Anything unrecognised is raw.
fn detect(src: &mut dyn ImageBytes) -> Result<Detected, Refused> {
    let head = read(src, 0, 512)?;
    let starts = |m: &[u8]| head.starts_with(m);
    let d = if starts(b"QFI\xfb") {
        if head.len() >= 8 && matches!(be32(&head, 4), 2 | 3) {
            Detected::Known(ImageFormat::Qcow2)
        } else {
            Detected::Other("qcow (not version 2 or 3)")
        }
    } else if starts(b"KDMV") {
        Detected::Known(ImageFormat::Vmdk)
    } else if starts(b"COWD") {
        Detected::Other("vmdk (ESX COWD sparse)")
    } else if head.len() >= 0x44 && le32(&head, 0x40) == 0xbeda_107f {
        Detected::Known(ImageFormat::Vdi)
    } else if starts(b"conectix") {
        Detected::Known(ImageFormat::Vpc)
    } else if starts(b"QED\0") {
        Detected::Known(ImageFormat::Qed)
    } else if starts(b"vhdxfile") {
        Detected::Known(ImageFormat::Vhdx)
    } else if starts(b"LUKS\xba\xbe") {
        Detected::Other("luks")
    } else if starts(b"Bochs Virtual HD Image") {
        Detected::Other("bochs")
    } else if starts(b"#!/bin/sh\n#V2.0 Format") {
        Detected::Other("cloop")
    } else if starts(b"WithoutFreeSpace") || starts(b"WithouFreSpacExt") {
        Detected::Other("parallels")
    } else if text_descriptor(&head) {
        Detected::Other("vmdk (a text descriptor naming extent files)")
    } else if is_iso(src)? {
        Detected::Other("iso")
    } else {
        Detected::Known(ImageFormat::Raw)
    };
    Ok(d)
}

/// A VMDK descriptor file: text that names other files as its extents.
fn text_descriptor(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.trim_start().starts_with("# Disk DescriptorFile")
        || text
            .lines()
            .any(|l| l.trim_start().starts_with("createType"))
}

/// ISO 9660: `CD001` in a volume descriptor at 32 KiB, 34 KiB or 36 KiB.
fn is_iso(src: &mut dyn ImageBytes) -> Result<bool, Refused> {
    for off in [0x8001u64, 0x8801, 0x9001] {
        if read(src, off, 5)? == b"CD001" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Inspect `src`: refuse anything shelf cannot vouch for, else its format and virtual
/// size. `declared` is the format the caller claimed (none: take the detected one); a
/// mismatch is refused, whichever way round. `max_virtual` bounds the virtual size.
pub fn inspect(
    src: &mut dyn ImageBytes,
    declared: Option<ImageFormat>,
    max_virtual: u64,
) -> Result<Inspected, Refused> {
    let format = match detect(src)? {
        Detected::Other(name) => {
            return refuse(format!("its format is {name}, which shelf does not import"))
        }
        Detected::Known(f) => f,
    };
    // A fixed VHD has its footer only at the end; qemu does not probe it, so it is raw
    // unless declared vpc.
    let format = match (declared, format) {
        (Some(ImageFormat::Vpc), ImageFormat::Raw) if vpc_footer_at_end(src)? => ImageFormat::Vpc,
        _ => format,
    };
    if let Some(d) = declared.filter(|d| *d != format) {
        return refuse(format!("it was declared {d} but it is a {format} image"));
    }
    let virtual_size = match format {
        ImageFormat::Raw => src.len(),
        ImageFormat::Qcow2 => inspect_qcow2(src)?,
        ImageFormat::Vmdk => inspect_vmdk(src)?,
        ImageFormat::Vdi => inspect_vdi(src)?,
        ImageFormat::Vpc => inspect_vpc(src)?,
        ImageFormat::Qed => inspect_qed(src)?,
        ImageFormat::Vhdx => vhdx::inspect_vhdx(src)?,
    };
    if virtual_size > max_virtual {
        return refuse(format!(
            "its virtual size {virtual_size} is over the limit of {max_virtual} bytes"
        ));
    }
    if virtual_size == 0 {
        return refuse("its virtual size is 0");
    }
    Ok(Inspected {
        format,
        virtual_size,
    })
}

/// qcow2 header extensions shelf accepts: end, feature name table, bitmaps.
const QCOW2_EXT_END: u32 = 0;
const QCOW2_EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const QCOW2_EXT_BITMAPS: u32 = 0x2385_2875;
const QCOW2_EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;
const QCOW2_EXT_ENCRYPTION: u32 = 0x0537_be77;
/// Incompatible features shelf accepts: dirty (0), compression type (3), extended L2 (4).
const QCOW2_INCOMPAT_OK: u64 = 1 | 1 << 3 | 1 << 4;
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;
const QCOW2_INCOMPAT_CORRUPT: u64 = 1 << 1;

fn inspect_qcow2(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
    let h = read(src, 0, 112)?;
    if h.len() < 72 {
        return refuse("its qcow2 header is truncated");
    }
    let version = be32(&h, 4);
    let (backing_offset, backing_size) = (be64(&h, 8), be32(&h, 16));
    let cluster_bits = be32(&h, 20);
    let size = be64(&h, 24);
    if backing_offset != 0 || backing_size != 0 {
        return refuse("it is a qcow2 with a backing file");
    }
    if !(9..=21).contains(&cluster_bits) {
        return refuse(format!("its qcow2 cluster_bits {cluster_bits} is invalid"));
    }
    if be32(&h, 32) != 0 {
        return refuse("it is an encrypted qcow2");
    }
    let ext_start = if version == 3 {
        if h.len() < 104 {
            return refuse("its qcow2 v3 header is truncated");
        }
        let incompat = be64(&h, 72);
        if incompat & QCOW2_INCOMPAT_DATA_FILE != 0 {
            return refuse("it is a qcow2 with an external data file");
        }
        if incompat & QCOW2_INCOMPAT_CORRUPT != 0 {
            return refuse("it is a qcow2 marked corrupt");
        }
        if incompat & !QCOW2_INCOMPAT_OK != 0 {
            return refuse(format!(
                "it is a qcow2 with unknown incompatible features {incompat:#x}"
            ));
        }
        let header_length = be32(&h, 100) as u64;
        if !(104..=4096).contains(&header_length) || header_length % 8 != 0 {
            return refuse(format!(
                "its qcow2 header_length {header_length} is invalid"
            ));
        }
        header_length
    } else {
        72
    };
    qcow2_extensions(src, ext_start, 1u64 << cluster_bits)?;
    Ok(size)
}

/// Walk the header extensions (they lie in the first cluster); refuse the ones that name
/// another file or that shelf does not know.
fn qcow2_extensions(src: &mut dyn ImageBytes, start: u64, cluster: u64) -> Result<(), Refused> {
    let end = cluster.min(MAX_READ as u64).min(src.len());
    let area = read(src, 0, end as usize)?;
    let mut at = start as usize;
    loop {
        if at + 8 > area.len() {
            return refuse("its qcow2 header extensions run past the first cluster");
        }
        let (kind, len) = (be32(&area, at), be32(&area, at + 4) as usize);
        match kind {
            QCOW2_EXT_END => return Ok(()),
            QCOW2_EXT_BACKING_FORMAT => {
                return refuse("it is a qcow2 naming a backing format (a backing file)")
            }
            QCOW2_EXT_DATA_FILE => return refuse("it is a qcow2 with an external data file"),
            QCOW2_EXT_ENCRYPTION => return refuse("it is an encrypted qcow2"),
            QCOW2_EXT_FEATURE_NAMES | QCOW2_EXT_BITMAPS => {}
            other => {
                return refuse(format!(
                    "it is a qcow2 with an unknown header extension {other:#x}"
                ))
            }
        }
        at = at + 8 + len.div_ceil(8) * 8;
    }
}

/// The sector where qemu reads a sparse VMDK's embedded descriptor (0x200).
const VMDK_DESC_SECTOR: u64 = 1;
/// How many descriptor bytes qemu searches (block/vmdk.c DESC_SIZE, 20 sectors).
const VMDK_DESC_SIZE: usize = 20 * 512;

const VMDK_CREATE_TYPES: &[&str] = &["monolithicSparse", "streamOptimized"];

fn inspect_vmdk(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
    let h = read(src, 0, 512)?;
    if h.len() < 80 {
        return refuse("its vmdk header is truncated");
    }
    let version = le32(&h, 4);
    if !(1..=3).contains(&version) {
        return refuse(format!("its vmdk version {version} is not 1 to 3"));
    }
    let capacity = le64(&h, 12);
    // qemu ignores both descriptor fields of a sparse header (block/vmdk.c: `vmdk_open`
    // sets `desc_offset = 0x200`, `vmdk_parent_open` and `vmdk_read_cid` read DESC_SIZE
    // bytes there), except that a zero capacity makes it open the descriptor at
    // desc_offset as a descriptor file (refused below: virtual size 0). So the
    // descriptor shelf checks is the one qemu reads, and the header may not point
    // elsewhere.
    let desc_offset = le64(&h, 28);
    if desc_offset != VMDK_DESC_SECTOR {
        return refuse(format!(
            "its vmdk descriptor is at sector {desc_offset}, not 1 where qemu reads it"
        ));
    }
    let bytes = read(src, VMDK_DESC_SECTOR * 512, VMDK_DESC_SIZE)?;
    // qemu's `strstr` stops at the first NUL, and so does this check.
    let bytes = bytes.split(|&b| b == 0).next().unwrap_or_default();
    // qemu finds the parent by a substring search, not a key: a comment or a value that
    // holds the word names a backing file just as well.
    if bytes
        .windows(b"parentFileNameHint".len())
        .any(|w| w == b"parentFileNameHint")
    {
        return refuse("it is a vmdk with a parent (parentFileNameHint)");
    }
    let text = String::from_utf8_lossy(bytes);
    check_vmdk_descriptor(&text)?;
    capacity
        .checked_mul(512)
        .ok_or_else(|| Refused("its vmdk capacity overflows".into()))
}

/// The embedded descriptor: one of the accepted create types, one SPARSE extent (the file
/// itself), no parent.
fn check_vmdk_descriptor(text: &str) -> Result<(), Refused> {
    let mut create_type = None;
    let mut extents = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            let kind = line.split_whitespace().nth(2).unwrap_or_default();
            if kind != "SPARSE" {
                return refuse(format!("its vmdk descriptor has a {kind} extent"));
            }
            extents += 1;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return refuse("its vmdk descriptor has a line shelf does not understand");
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        match key {
            "createType" => create_type = Some(value.to_string()),
            "parentCID" if value.eq_ignore_ascii_case("ffffffff") => {}
            "parentCID" | "parentFileNameHint" => return refuse("it is a vmdk with a parent"),
            "version" | "CID" | "encoding" | "isNativeSnapshot" => {}
            k if k.starts_with("ddb.") => {}
            k => {
                return refuse(format!(
                    "its vmdk descriptor has an unknown key {:?}",
                    k.chars().take(32).collect::<String>()
                ))
            }
        }
    }
    match create_type.as_deref() {
        Some(t) if VMDK_CREATE_TYPES.contains(&t) => {}
        Some(t) => {
            return refuse(format!(
                "it is a vmdk of type {:?}; only monolithicSparse and streamOptimized are imported",
                t.chars().take(32).collect::<String>()
            ))
        }
        None => return refuse("its vmdk descriptor has no createType"),
    }
    if extents != 1 {
        return refuse(format!("its vmdk descriptor has {extents} extents, not 1"));
    }
    Ok(())
}

fn inspect_vdi(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
    let h = read(src, 0, 512)?;
    if h.len() < 0x178 {
        return refuse("its vdi header is truncated");
    }
    if le32(&h, 0x44) >> 16 != 1 {
        return refuse("its vdi version is not 1.x");
    }
    match le32(&h, 0x4c) {
        1 | 2 => {}
        t => return refuse(format!("it is a vdi of type {t} (only dynamic or static)")),
    }
    Ok(le64(&h, 0x170))
}

/// Whether the last 512 bytes are a VHD footer.
fn vpc_footer_at_end(src: &mut dyn ImageBytes) -> Result<bool, Refused> {
    if src.len() < 512 {
        return Ok(false);
    }
    let end = src.len() - 512;
    Ok(read(src, end, 8)? == b"conectix")
}

fn inspect_vpc(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
    let mut f = read(src, 0, 512)?;
    if !f.starts_with(b"conectix") {
        let end = src.len().saturating_sub(512);
        f = read(src, end, 512)?;
    }
    if f.len() < 512 || !f.starts_with(b"conectix") {
        return refuse("its vpc footer is missing");
    }
    match be32(&f, 60) {
        2 | 3 => {}
        4 => return refuse("it is a differencing vhd (with a parent)"),
        t => return refuse(format!("it is a vhd of type {t}")),
    }
    let current = be64(&f, 48);
    let chs = u64::from(u16::from_be_bytes([f[56], f[57]])) * u64::from(f[58]) * u64::from(f[59]);
    Ok(current.max(chs * 512))
}

/// QED features shelf accepts: need-check (1).
const QED_FEATURES_OK: u64 = 1 << 1;

fn inspect_qed(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
    let h = read(src, 0, 64)?;
    if h.len() < 64 {
        return refuse("its qed header is truncated");
    }
    let features = le64(&h, 16);
    if features & 1 != 0 || le32(&h, 60) != 0 {
        return refuse("it is a qed with a backing file");
    }
    if features & !QED_FEATURES_OK != 0 {
        return refuse(format!("it is a qed with unknown features {features:#x}"));
    }
    Ok(le64(&h, 48))
}

mod vhdx;

#[cfg(test)]
mod tests;
