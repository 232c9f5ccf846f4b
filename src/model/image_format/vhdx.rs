//! VHDX inspection (part of [`super`]): the region tables may name only the
//! block allocation table and the metadata region; the metadata must say there is no
//! parent and give the virtual size; the log must be empty (qemu would replay it).
//! Every region table and header present is checked, not only the one qemu would pick.

use super::{read, refuse, ImageBytes, Refused};

const KIB: u64 = 1024;
const HEADERS: [u64; 2] = [64 * KIB, 128 * KIB];
const REGION_TABLES: [u64; 2] = [192 * KIB, 256 * KIB];
const BAT: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const METADATA: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const FILE_PARAMETERS: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const PARENT_LOCATOR: &str = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C";
/// Metadata items shelf knows and accepts besides the two it reads.
const KNOWN_ITEMS: &[&str] = &[
    "8141BF1D-A96F-4709-BA47-F233A8FAAB5F", // logical sector size
    "CDA348C7-445D-4471-9CC9-E9885251C556", // physical sector size
    "BECA12AB-B2E6-4523-93EF-C309E000C746", // page 83 data
];

/// A GUID as VHDX stores it: the first three fields little-endian.
pub(super) fn guid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).expect("a GUID constant");
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn read_exact(src: &mut dyn ImageBytes, at: u64, n: usize) -> Result<Vec<u8>, Refused> {
    let b = read(src, at, n)?;
    if b.len() < n {
        return refuse("its vhdx metadata is truncated");
    }
    Ok(b)
}

/// The virtual size of a VHDX, or why it is refused.
pub(super) fn inspect_vhdx(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
    let mut headers = 0;
    for at in HEADERS {
        let h = read(src, at, 80)?;
        if h.len() == 80 && h.starts_with(b"head") {
            headers += 1;
            // LogGuid at 48: a non-zero one means a log qemu would replay.
            if h[48..64].iter().any(|b| *b != 0) {
                return refuse("it is a vhdx with a log to replay");
            }
        }
    }
    if headers == 0 {
        return refuse("its vhdx headers are missing");
    }
    let mut size = None;
    let mut tables = 0;
    for at in REGION_TABLES {
        let t = read(src, at, 64 * KIB as usize)?;
        if t.len() < 16 || !t.starts_with(b"regi") {
            continue;
        }
        tables += 1;
        let count = le32(&t, 8) as usize;
        if count == 0 || 16 + count * 32 > t.len() {
            return refuse(format!("its vhdx region table has {count} entries"));
        }
        let mut metadata = None;
        for e in t[16..16 + count * 32].chunks(32) {
            let id = &e[0..16];
            if id == guid(METADATA) {
                metadata = Some((le64(e, 16), le32(e, 24)));
            } else if id != guid(BAT) {
                return refuse("it is a vhdx with a region shelf does not know");
            }
        }
        let Some((offset, length)) = metadata else {
            return refuse("its vhdx has no metadata region");
        };
        let s = metadata_size(src, offset, length)?;
        if size.is_some_and(|v| v != s) {
            return refuse("its vhdx region tables disagree");
        }
        size = Some(s);
    }
    match (tables, size) {
        (0, _) | (_, None) => refuse("its vhdx region tables are missing"),
        (_, Some(s)) => Ok(s),
    }
}

/// Read the metadata table: no parent, the virtual disk size.
fn metadata_size(src: &mut dyn ImageBytes, region: u64, length: u32) -> Result<u64, Refused> {
    let t = read(src, region, 64 * KIB as usize)?;
    if t.len() < 32 || !t.starts_with(b"metadata") {
        return refuse("its vhdx metadata table is missing");
    }
    let count = u16::from_le_bytes([t[10], t[11]]) as usize;
    if 32 + count * 32 > t.len() {
        return refuse("its vhdx metadata table is too long");
    }
    let item = |e: &[u8]| (u64::from(le32(e, 16)), le32(e, 20) as usize);
    let (mut size, mut params) = (None, None);
    for e in t[32..32 + count * 32].chunks(32) {
        let id = &e[0..16];
        let (offset, len) = item(e);
        if offset + len as u64 > u64::from(length) {
            return refuse("its vhdx metadata runs past its region");
        }
        if id == guid(PARENT_LOCATOR) {
            return refuse("it is a differencing vhdx (with a parent)");
        } else if id == guid(VIRTUAL_DISK_SIZE) && len >= 8 {
            size = Some(le64(&read_exact(src, region + offset, 8)?, 0));
        } else if id == guid(FILE_PARAMETERS) && len >= 8 {
            params = Some(le32(&read_exact(src, region + offset, 8)?, 4));
        } else if !KNOWN_ITEMS.iter().any(|k| id == guid(k)) {
            return refuse("it is a vhdx with metadata shelf does not know");
        }
    }
    match (params, size) {
        (Some(flags), _) if flags & 2 != 0 => refuse("it is a differencing vhdx (with a parent)"),
        (Some(_), Some(s)) => Ok(s),
        _ => refuse("its vhdx metadata lacks the file parameters or the virtual size"),
    }
}
