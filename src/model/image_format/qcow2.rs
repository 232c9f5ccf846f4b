//! qcow2 inspection (part of [`super`]): the header, its incompatible features and its
//! header extensions (no backing file, external data file or encryption).

use super::{be32, be64, read, refuse, ImageBytes, Refused, MAX_READ};

/// qcow2 header extensions shelf accepts: end, feature name table, bitmaps.
const QCOW2_EXT_END: u32 = 0;
const QCOW2_EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const QCOW2_EXT_BITMAPS: u32 = 0x2385_2875;
pub(super) const QCOW2_EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub(super) const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;
const QCOW2_EXT_ENCRYPTION: u32 = 0x0537_be77;
/// Incompatible features shelf accepts: dirty (0), compression type (3), extended L2 (4).
const QCOW2_INCOMPAT_OK: u64 = 1 | 1 << 3 | 1 << 4;
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;
const QCOW2_INCOMPAT_CORRUPT: u64 = 1 << 1;

pub(super) fn inspect_qcow2(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
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
