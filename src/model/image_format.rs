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

mod qcow2;
mod simple;
mod vhdx;
mod vmdk;

use qcow2::inspect_qcow2;
#[cfg(test)]
use qcow2::{QCOW2_EXT_BACKING_FORMAT, QCOW2_EXT_DATA_FILE};
use simple::{inspect_qed, inspect_vdi, inspect_vpc, vpc_footer_at_end};
#[cfg(test)]
use vmdk::check_vmdk_descriptor;
use vmdk::inspect_vmdk;

#[cfg(test)]
mod tests;
