//! The formats with one fixed header (part of [`super`]): VDI, VPC (VHD) and QED.

use super::{be32, be64, le32, le64, read, refuse, ImageBytes, Refused};

pub(super) fn inspect_vdi(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
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
pub(super) fn vpc_footer_at_end(src: &mut dyn ImageBytes) -> Result<bool, Refused> {
    if src.len() < 512 {
        return Ok(false);
    }
    let end = src.len() - 512;
    Ok(read(src, end, 8)? == b"conectix")
}

pub(super) fn inspect_vpc(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
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

pub(super) fn inspect_qed(src: &mut dyn ImageBytes) -> Result<u64, Refused> {
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
