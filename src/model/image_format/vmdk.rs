//! VMDK inspection (part of [`super`]): a monolithic sparse or stream-optimized file
//! whose embedded descriptor names no other file.

use super::{le32, le64, read, refuse, ImageBytes, Refused};

/// The sector where qemu reads a sparse VMDK's embedded descriptor (0x200).
const VMDK_DESC_SECTOR: u64 = 1;
/// How many descriptor bytes qemu searches (block/vmdk.c DESC_SIZE, 20 sectors).
const VMDK_DESC_SIZE: usize = 20 * 512;

const VMDK_CREATE_TYPES: &[&str] = &["monolithicSparse", "streamOptimized"];

pub(super) fn inspect_vmdk(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
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
pub(super) fn check_vmdk_descriptor(text: &str) -> Result<(), Refused> {
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
