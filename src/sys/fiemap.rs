//! FIEMAP (`FS_IOC_FIEMAP`): a file's extent map, the logical → physical ranges the
//! filesystem allocated. `snapshot.send` compares two snapshots' maps to find what changed
//! without reading the data (src/replication/diff.rs).
//!
//! The map is asked for with `FIEMAP_FLAG_SYNC` (dirty pages are written back first, so
//! delayed allocations have addresses), in batches of [`BATCH`] extents. Unwritten
//! (preallocated) extents read as zeros and are returned as holes; extents whose
//! physical address cannot be compared (delalloc, unknown, encoded, inline, tail-packed)
//! are returned with `comparable: false` so the diff sends them.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// One allocated range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    /// Its offset in the file.
    pub logical: u64,
    /// Its address on the device.
    pub physical: u64,
    /// Its length.
    pub len: u64,
    /// Whether `physical` identifies the blocks and can be compared (false for
    /// delayed-allocation, unknown, encoded or inline extents, which a diff then always
    /// takes as changed).
    pub comparable: bool,
}

/// Extents asked for per ioctl.
pub const BATCH: usize = 512;
/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)` (32-byte header).
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
const FIEMAP_EXTENT_ENCODED: u32 = 0x8;
const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
const FIEMAP_EXTENT_DATA_TAIL: u32 = 0x400;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

/// `struct fiemap_extent` (linux/fiemap.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// `struct fiemap` followed by room for [`BATCH`] extents.
#[repr(C)]
#[derive(Debug)]
struct FiemapBuf {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
    fm_extents: [FiemapExtent; BATCH],
}

/// The extent map of `file`'s first `size` bytes, sorted; unwritten extents left out.
/// At most `max` extents are read (`Err` with `ErrorKind::OutOfMemory` past it, so a
/// file fragmented on purpose costs bounded memory).
pub fn extent_map(file: &File, size: u64, max: usize) -> io::Result<Vec<Mapped>> {
    let mut out: Vec<Mapped> = Vec::new();
    let mut buf = Box::new(FiemapBuf {
        fm_start: 0,
        fm_length: 0,
        fm_flags: 0,
        fm_mapped_extents: 0,
        fm_extent_count: 0,
        fm_reserved: 0,
        fm_extents: [FiemapExtent::default(); BATCH],
    });
    let mut start = 0u64;
    let mut raw = 0usize;
    while start < size {
        buf.fm_start = start;
        buf.fm_length = size - start;
        buf.fm_flags = FIEMAP_FLAG_SYNC;
        buf.fm_mapped_extents = 0;
        buf.fm_extent_count = BATCH as u32;
        let p: *mut FiemapBuf = &mut *buf;
        // SAFETY: `p` points to a live, exclusively borrowed `FiemapBuf` laid out as
        // `struct fiemap` with `fm_extent_count` (BATCH) extents of room after it; the
        // kernel writes at most that many extents and only inside the buffer. The
        // descriptor stays open for the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, p) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (buf.fm_mapped_extents as usize).min(BATCH);
        if n == 0 {
            break;
        }
        raw += n;
        if raw > max {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("more than {max} extents"),
            ));
        }
        let mut last = false;
        for e in &buf.fm_extents[..n] {
            start = start.max(e.fe_logical.saturating_add(e.fe_length));
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
            if e.fe_flags & FIEMAP_EXTENT_UNWRITTEN != 0 || e.fe_logical >= size {
                continue;
            }
            let uncomparable = FIEMAP_EXTENT_UNKNOWN
                | FIEMAP_EXTENT_DELALLOC
                | FIEMAP_EXTENT_ENCODED
                | FIEMAP_EXTENT_NOT_ALIGNED
                | FIEMAP_EXTENT_DATA_INLINE
                | FIEMAP_EXTENT_DATA_TAIL;
            let m = Mapped {
                logical: e.fe_logical,
                physical: e.fe_physical,
                len: e.fe_length.min(size - e.fe_logical),
                comparable: e.fe_flags & uncomparable == 0,
            };
            // The kernel reports extents in order; anything else is dropped to keep the
            // map sorted and disjoint (the diff then sends that range as changed).
            match out.last() {
                Some(l) if m.logical < l.logical + l.len => continue,
                _ => out.push(m),
            }
        }
        if last {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn the_header_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<FiemapExtent>(), 56);
        assert_eq!(std::mem::size_of::<FiemapBuf>(), 32 + 56 * BATCH);
    }

    #[test]
    fn a_sparse_file_maps_its_written_ranges_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create_new(dir.path().join("f")).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[1u8; 65536], 1 << 20).unwrap();
        let map = match extent_map(&f, 8 << 20, 1000) {
            Ok(m) => m,
            // tmpfs and some overlay filesystems have no FIEMAP: nothing to check there.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
            Err(e) => panic!("{e}"),
        };
        assert!(!map.is_empty());
        let total: u64 = map.iter().map(|m| m.len).sum();
        assert!(
            map[0].logical <= 1 << 20 && (65536..8 << 20).contains(&total),
            "{map:?}"
        );
    }
}
