//! File-system calls: reflink, sparse copy, preallocation, xattrs, fsync, statvfs, and the
//! checked opening of volumes that tenants' NFS clients can reach ([`open_checked`]).
//!
//! All of these block; callers run them off the event loop (`smol::unblock`).

mod backing;
mod beneath;
mod stamp;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::sys::stat::{fstat, FileStat, SFlag};
use xattr::FileExt;

pub use backing::check_backing_store;
pub use beneath::{
    create_new_at, open_beneath, open_beneath_walk, open_checked, open_dir, open_regular, Expect,
    OpenError,
};
pub use stamp::{
    get_identity, get_identity_fd, get_legacy_identity_fd, probe_stamp, remove_legacy_identity_fd,
    set_identity, set_identity_fd, LEGACY_STAMP_PREFIX, STAMP_PREFIX,
};

/// `FICLONE`: `_IOW(0x94, 9, int)`.
const FICLONE: u64 = 0x4004_9409;

/// Create a new file that must not exist yet, with the given mode.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have cleared bits; the mode is part of the contract (0660 volumes).
    nix::sys::stat::fchmod(
        &f,
        nix::sys::stat::Mode::from_bits_truncate(mode as libc::mode_t),
    )
    .map_err(io::Error::from)?;
    Ok(f)
}

/// Make `dst` share `src`'s blocks (copy-on-write). Fails with `EOPNOTSUPP`/`EXDEV`/`EINVAL`
/// when the filesystem cannot reflink.
pub fn ficlone(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source file descriptor as its integer argument and reads no
    // memory of ours; both descriptors are open for the duration of the call.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copy `src` into the empty file `dst`, keeping holes: only data ranges found with
/// `SEEK_DATA`/`SEEK_HOLE` are copied (with `copy_file_range`), then `dst` is sized to
/// `src`'s length.
pub fn copy_sparse(src: &File, dst: &File) -> io::Result<()> {
    use nix::unistd::{lseek, Whence};
    let len = src.metadata()?.len() as i64;
    let mut pos: i64 = 0;
    while pos < len {
        let data = match lseek(src, pos, Whence::SeekData) {
            Ok(o) => o,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(src, data, Whence::SeekHole).map_err(io::Error::from)?;
        let mut off: i64 = data;
        while off < hole {
            let (mut off_in, mut off_out) = (off, off);
            let want = (hole - off) as usize;
            let n =
                nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)
                    .map_err(io::Error::from)?;
            if n == 0 {
                break;
            }
            off += n as i64;
        }
        pos = hole;
    }
    dst.set_len(len as u64)
}

/// Reserve real blocks for `[offset, offset+len)` (a preallocated, non-sparse volume).
pub fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    nix::fcntl::fallocate(
        file,
        nix::fcntl::FallocateFlags::empty(),
        offset as i64,
        len as i64,
    )
    .map_err(io::Error::from)
}

/// Deallocate `[offset, offset+len)`, keeping the file's size: the range reads as zeros
/// (a received stream's hole extent).
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::FallocateFlags as F;
    nix::fcntl::fallocate(
        file,
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        offset as i64,
        len as i64,
    )
    .map_err(io::Error::from)
}

/// The block device's discard granularity in bytes (a thin LV's is its pool's block size),
/// from sysfs; `None` when it takes no discards.
pub fn discard_granularity(file: &File) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let rdev = file.metadata().ok()?.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let text = std::fs::read_to_string(format!(
        "/sys/dev/block/{major}:{minor}/queue/discard_granularity"
    ))
    .ok()?;
    text.trim().parse().ok().filter(|g: &u64| *g > 0)
}

/// `BLKDISCARD` of a block device's `len` bytes at `offset`.
pub fn discard(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const BLKDISCARD: libc::c_ulong = 0x1277; // _IO(0x12, 119)
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKDISCARD reads two u64 (start, length) from the pointer, which lives for
    // the call; the descriptor is open.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKDISCARD, range.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// fsync a directory, so that entries created or removed in it are durable.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Write `bytes` to `dir/name` so that the file is either absent or whole, even across a
/// crash: a temporary file `.<name>.tmp` in `dir` is written with `mode` and fsynced, renamed over
/// `name`, and `dir` is fsynced. The caller makes sure no one else writes `name` (shelfd
/// holds the state directory's lock).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have cleared bits (and a leftover temporary has its own mode).
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    fsync_dir(dir)
}

/// Size, free and used bytes of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Total bytes.
    pub size: u64,
    /// Bytes available to an unprivileged writer.
    pub free: u64,
    /// Bytes in use.
    pub used: u64,
}

/// statvfs of the filesystem holding `path`.
pub fn usage(path: &Path) -> io::Result<FsUsage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let frag = s.fragment_size() as u64;
    let size = s.blocks() as u64 * frag;
    let free_all = s.blocks_free() as u64 * frag;
    Ok(FsUsage {
        size,
        free: s.blocks_available() as u64 * frag,
        used: size.saturating_sub(free_all),
    })
}

/// Bytes actually allocated to a file (st_blocks × 512).
pub fn allocated(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

/// Bytes allocated to the regular file at `path`, never following a symbolic link:
/// `None` when nothing is there or it is not a regular file (a link, FIFO or directory a
/// tenant planted is not taken for a volume).
pub fn allocated_regular(path: &Path) -> io::Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Some(m.blocks() * 512)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `statfs.f_type` of the local filesystems on which `stat` of an inode the kernel holds
/// reads no disk and asks no server: XFS, ext2/3/4, Btrfs, tmpfs.
const LOCAL_FS: [nix::sys::statfs::FsType; 4] = [
    nix::sys::statfs::XFS_SUPER_MAGIC,
    nix::sys::statfs::EXT4_SUPER_MAGIC,
    nix::sys::statfs::BTRFS_SUPER_MAGIC,
    nix::sys::statfs::TMPFS_MAGIC,
];

/// Whether `dir` is on one of the local filesystems of [`allocated_regular_cached`]
/// (blocking: one `statfs`).
pub fn is_local_fs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| LOCAL_FS.contains(&s.filesystem_type()))
}

/// [`allocated_regular`] from what the kernel holds in memory, so that the event loop may
/// ask it: the path is resolved by `openat2` with `RESOLVE_CACHED`, which fails with
/// `EAGAIN` rather than read a directory or revalidate an entry (it was made for
/// io_uring's non-blocking opens), as an `O_PATH` handle on the last component itself
/// (a link there is not followed, as `lstat`); the inode it reaches is in memory, so its
/// `fstat` reads nothing either, on a local filesystem ([`is_local_fs`]: the caller's
/// check). `None` when the answer needs the slow path: not every component cached, a
/// kernel before 5.12 (`EINVAL`) or a sandbox refusing `openat2` (`ENOSYS`), any other
/// error; then ask [`allocated_regular`] off the event loop.
pub fn allocated_regular_cached(path: &Path) -> Option<io::Result<Option<u64>>> {
    use std::os::unix::fs::MetadataExt;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::from_bits_retain(libc::RESOLVE_CACHED));
    let fd = match nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, how) {
        Ok(fd) => fd,
        // A negative entry in the cache: known not to be there.
        Err(Errno::ENOENT) => return Some(Ok(None)),
        Err(_) => return None,
    };
    match File::from(fd).metadata() {
        Ok(m) if m.file_type().is_file() => Some(Ok(Some(m.blocks() * 512))),
        Ok(_) => Some(Ok(None)),
        Err(_) => None,
    }
}

/// Can this directory's filesystem reflink? Tries a `FICLONE` between two scratch files.
pub fn probe_reflink(dir: &Path) -> bool {
    let a = dir.join(format!(".reflink-probe-{}-a", std::process::id()));
    let b = dir.join(format!(".reflink-probe-{}-b", std::process::id()));
    let result = (|| -> io::Result<()> {
        let fa = create_new(&a, 0o600)?;
        std::io::Write::write_all(&mut &fa, &[0u8; 4096])?;
        let fb = create_new(&b, 0o600)?;
        ficlone(&fa, &fb)
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn the_cached_allocation_is_the_stat_one_and_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volume");
        let f = create_new(&path, 0o660).unwrap();
        f.set_len(1 << 20).unwrap();
        (&f).write_all(&[7u8; 64 << 10]).unwrap();
        f.sync_all().unwrap();
        let slow = allocated_regular(&path).unwrap();
        assert!(slow.unwrap() >= 64 << 10);
        // Just made, so every component is in the cache: the fast path answers.
        assert_eq!(allocated_regular_cached(&path).unwrap().unwrap(), slow);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(allocated_regular(&link).unwrap(), None);
        assert_eq!(allocated_regular_cached(&link).unwrap().unwrap(), None);
        let gone = dir.path().join("gone");
        assert_eq!(allocated_regular(&gone).unwrap(), None);
        assert!(matches!(
            allocated_regular_cached(&gone),
            None | Some(Ok(None))
        ));
        // A FIFO planted in the volume's place (a tenant's NFS write): the O_PATH open does
        // not wait for a writer, and the answer is "none", as lstat's is.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(allocated_regular(&fifo).unwrap(), None);
        assert!(matches!(
            allocated_regular_cached(&fifo),
            None | Some(Ok(None))
        ));
        // A directory too.
        assert!(matches!(
            allocated_regular_cached(dir.path()),
            None | Some(Ok(None))
        ));
        // procfs asks its owner for every stat: never taken for a local filesystem.
        assert!(!is_local_fs(Path::new("/proc")));
    }

    #[test]
    fn sparse_copy_keeps_data_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let mut src = create_new(&src_path, 0o660).unwrap();
        src.set_len(10 << 20).unwrap();
        src.seek(SeekFrom::Start(5 << 20)).unwrap();
        src.write_all(b"pattern-in-the-middle").unwrap();
        let dst = create_new(&dir.path().join("dst"), 0o660).unwrap();
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(dst.metadata().unwrap().len(), 10 << 20);
        let mut buf = vec![0; 21];
        let mut d = &dst;
        d.seek(SeekFrom::Start(5 << 20)).unwrap();
        d.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pattern-in-the-middle");
        assert!(
            allocated(&dir.path().join("dst")).unwrap() < 1 << 20,
            "holes kept"
        );
    }

    #[test]
    fn create_new_sets_mode_and_refuses_existing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        create_new(&p, 0o660).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o660
        );
        assert_eq!(
            create_new(&p, 0o660).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }

    #[test]
    fn usage_reports_a_filesystem() {
        let u = usage(Path::new("/")).unwrap();
        assert!(u.size > 0 && u.free <= u.size);
    }
}
