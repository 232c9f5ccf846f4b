//! File-system calls: reflink, sparse copy, preallocation, xattrs, fsync, statvfs, and the
//! checked opening of volumes that tenants' NFS clients can reach ([`open_checked`]).
//!
//! All of these block; callers run them off the event loop (`smol::unblock`).

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

/// fsync a directory, so that entries created or removed in it are durable.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
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

/// The namespace of the identity and exports record every volume, snapshot and image
/// carries. `trusted.*` needs CAP_SYS_ADMIN to read or write, and no NFS server (kernel
/// nfsd, nfs-ganesha) exposes any namespace but `user.*` to its clients (RFC 8276), so a
/// tenant who can write its share's volume can neither read nor forge this record
/// (docs/security.md §2, "The stamp").
pub const STAMP_PREFIX: &str = "trusted.shelf.";

/// Where shelf before the stamp moved to [`STAMP_PREFIX`] wrote it: readable and writable
/// by any NFS client of the share. Read only to move it ([`get_legacy_identity_fd`]).
pub const LEGACY_STAMP_PREFIX: &str = "user.shelf.";

/// Set the stamp attributes `trusted.shelf.<key>` on a file.
pub fn set_identity(path: &Path, attrs: &BTreeMap<String, String>) -> io::Result<()> {
    for (k, v) in attrs {
        xattr::set(path, format!("{STAMP_PREFIX}{k}"), v.as_bytes())?;
    }
    Ok(())
}

/// Read every `trusted.shelf.*` attribute of a file.
pub fn get_identity(path: &Path) -> io::Result<BTreeMap<String, String>> {
    read_prefixed(xattr::list(path)?, |n| xattr::get(path, n), STAMP_PREFIX)
}

/// The attributes among `names` that start with `prefix`, keyed without it.
fn read_prefixed(
    names: impl Iterator<Item = std::ffi::OsString>,
    get: impl Fn(&str) -> io::Result<Option<Vec<u8>>>,
    prefix: &str,
) -> io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if let Some(key) = name.strip_prefix(prefix) {
            if let Some(v) = get(&name)? {
                out.insert(key.to_string(), String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    Ok(out)
}

/// What [`open_checked`] expects to find: a regular file with one link whose
/// `trusted.shelf.kind` and `trusted.shelf.id` attributes are these.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// `share` or `snapshot`.
    pub kind: &'a str,
    /// The share's or snapshot's id.
    pub id: &'a str,
}

/// Why a volume or snapshot could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Nothing is at the path.
    Missing(io::Error),
    /// Something is at the path that is not the file shelf made (the text says what).
    Tampered(String),
    /// A regular file with one link, but without any shelf identity in `trusted.shelf.*`:
    /// planted in place of a volume (whatever `user.shelf.*` a tenant wrote on it), left by
    /// a crash before its identity was written, or stamped by a shelf that predates
    /// [`STAMP_PREFIX`] and not moved yet.
    Unidentified,
    /// Any other failure.
    Io(io::Error),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Open a directory (for `*_at` calls beneath it).
pub fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// Set once `openat2` has answered `ENOSYS`: a seccomp sandbox refuses it (systemd's
/// `RestrictSUIDSGID=`, which cannot inspect `open_how`, and container runtimes' default
/// profiles do this so that callers fall back to `openat`), or the kernel predates 5.6.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Open `rel` beneath `dir` with `flags` (and `mode` when creating), never through a
/// symbolic link or a `/proc` magic link, and never out of `dir`: `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or, where `openat2` is
/// not available, [`open_beneath_walk`], which gives the same guarantees one component at
/// a time. `O_NOFOLLOW` and `O_CLOEXEC` are always added.
pub fn open_beneath(dir: &File, rel: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new().flags(flags).mode(mode).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        match nix::fcntl::openat2(dir, rel, how) {
            Err(Errno::ENOSYS) => {
                log::warn!("openat2 is not available here (ENOSYS); resolving paths one component at a time");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    open_beneath_walk(dir, rel, flags, mode)
}

/// [`open_beneath`] without `openat2`: every component but the last is opened with
/// `O_PATH | O_DIRECTORY | O_NOFOLLOW` relative to the one before (a symbolic link there
/// fails with `ENOTDIR` or `ELOOP`), the last with `flags | O_NOFOLLOW` (a link there is
/// `ELOOP`, or, with `O_PATH`, a handle on the link itself, which callers refuse by type).
/// An absolute path or `..` is `EXDEV`, as `RESOLVE_BENEATH` answers.
pub fn open_beneath_walk(dir: &File, rel: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    use std::path::Component;
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(p) => Ok(p),
            _ => Err(Errno::EXDEV),
        })
        .collect::<nix::Result<_>>()?;
    let Some((last, walk)) = parts.split_last() else {
        return Err(Errno::ENOENT);
    };
    let mut cur: Option<OwnedFd> = None;
    for part in walk {
        let at = cur.as_ref().map_or(dir.as_fd(), |f| f.as_fd());
        let next = nix::fcntl::openat(
            at,
            *part,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(dir.as_fd(), |f| f.as_fd());
    nix::fcntl::openat(
        at,
        *last,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )
}

/// Create the new file `rel` beneath `dir` with `mode`, never through a symbolic link.
pub fn create_new_at(dir: &File, rel: &Path, mode: u32) -> io::Result<File> {
    let f = File::from(
        open_beneath(
            dir,
            rel,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(mode as libc::mode_t),
        )
        .map_err(io::Error::from)?,
    );
    nix::sys::stat::fchmod(
        &f,
        nix::sys::stat::Mode::from_bits_truncate(mode as libc::mode_t),
    )
    .map_err(io::Error::from)?;
    Ok(f)
}

/// What a file type is called in an error message.
fn describe(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFREG => "a regular file",
        _ => "an object of unknown type",
    }
}

/// Open the volume or snapshot `rel` beneath `dir` for reading (and writing, with
/// `write`), refusing anything but the file shelf made: the path is resolved beneath
/// `dir` without following any symbolic link, the object is first opened with `O_PATH`
/// (so a FIFO or a device is never really opened), and it must be a regular file with a
/// single link (a hard link to a file elsewhere is refused) carrying `expect`'s identity.
/// Only then is that same inode re-opened, through `/proc/self/fd`, for I/O; every later
/// call acts on the returned descriptor, never on the path again.
pub fn open_checked(
    dir: &File,
    rel: &Path,
    expect: Expect<'_>,
    write: bool,
) -> Result<File, OpenError> {
    let f = open_regular(dir, rel, write)?;
    let attr = |k: &str| -> io::Result<Option<String>> {
        Ok(f.get_xattr(format!("{STAMP_PREFIX}{k}"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    };
    match (attr("kind")?, attr("id")?) {
        (Some(k), Some(i)) if k == expect.kind && i == expect.id => Ok(f),
        (None, None) => Err(OpenError::Unidentified),
        (k, i) => Err(OpenError::Tampered(format!(
            "it carries the identity of {} {}",
            k.as_deref().unwrap_or("(no kind)"),
            i.as_deref().unwrap_or("(no id)")
        ))),
    }
}

/// [`open_checked`] without the identity check: `rel` beneath `dir`, no symbolic link
/// followed, a regular file with a single link, re-opened through `/proc/self/fd`. For
/// reading or moving a stamp that is not (yet) in `trusted.shelf.*`; nothing else.
pub fn open_regular(dir: &File, rel: &Path, write: bool) -> Result<File, OpenError> {
    let handle = match open_beneath(dir, rel, OFlag::O_PATH, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Err(OpenError::Missing(Errno::ENOENT.into())),
        Err(Errno::ELOOP) | Err(Errno::EXDEV) => {
            return Err(OpenError::Tampered(
                "its path goes through a symbolic link".into(),
            ))
        }
        Err(Errno::ENOTDIR) => {
            return Err(OpenError::Tampered(
                "a directory on its path is not a directory".into(),
            ))
        }
        Err(e) => return Err(OpenError::Io(e.into())),
    };
    let st = fstat(&handle).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(OpenError::Tampered(format!(
            "it is {}, not a regular file",
            describe(&st)
        )));
    }
    if st.st_nlink != 1 {
        return Err(OpenError::Tampered(format!(
            "it has {} hard links (a volume has one)",
            st.st_nlink
        )));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    let again = fstat(&f).map_err(io::Error::from)?;
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
        return Err(OpenError::Tampered("it changed while being opened".into()));
    }
    Ok(f)
}

/// Check that an iSCSI backing store is what shelf made for share `share_id`: a block
/// device under `/dev` (an LVM pool's volume, where no tenant writes), or a file pool's
/// volume as [`open_checked`] accepts it (resolved beneath its share directory).
///
/// Under `/dev` only an LVM volume's shape is accepted, `/dev/VG/LV` (file pools cannot be
/// configured under `/dev`), without following links: the node itself is a block device,
/// or it is udev's link `../NAME` to a block device node directly in `/dev`.
pub fn check_backing_store(path: &Path, share_id: &str) -> Result<(), OpenError> {
    if path.starts_with("/dev") {
        return check_dev_backing_store(path);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(OpenError::Tampered(
            "it is not a file in a directory".into(),
        ));
    };
    let dir = open_dir(parent).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => OpenError::Missing(e),
        _ => OpenError::Io(e),
    })?;
    let expect = Expect {
        kind: "share",
        id: share_id,
    };
    open_checked(&dir, Path::new(name), expect, false).map(drop)
}

fn check_dev_backing_store(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::FileTypeExt;
    use std::path::Component;
    let plain = |p: &Path, depth: usize| {
        let c: Vec<_> = p.components().collect();
        c.len() == depth + 1
            && c[0] == Component::RootDir
            && c[1..].iter().all(|c| matches!(c, Component::Normal(_)))
            && p.starts_with("/dev")
    };
    if !plain(path, 3) {
        return Err(OpenError::Tampered(
            "it is under /dev but not an LVM volume's /dev/VG/LV".into(),
        ));
    }
    let lstat = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(m) => Ok(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OpenError::Missing(e)),
        Err(e) => Err(OpenError::Io(e)),
    };
    let mut m = lstat(path)?;
    if m.file_type().is_symlink() {
        // LVM's /dev/VG/LV is a link to the device-mapper node: udev makes it relative
        // (`../dm-3`), LVM without udev absolute (`/dev/mapper/VG-LV`). Follow that one
        // hop, lexically, and it must land on a block device node directly in /dev or
        // /dev/mapper (nothing under /dev is a tenant's: file pools there are refused).
        let target = std::fs::read_link(path).map_err(OpenError::Io)?;
        let node = normalize(&path.parent().unwrap_or(Path::new("/dev")).join(&target));
        if !(plain(&node, 2) || (plain(&node, 3) && node.starts_with("/dev/mapper"))) {
            return Err(OpenError::Tampered(format!(
                "it is a symbolic link to {}, not LVM's link to a device node in /dev or /dev/mapper",
                target.display()
            )));
        }
        m = lstat(&node)?;
    }
    if m.file_type().is_block_device() {
        Ok(())
    } else {
        Err(OpenError::Tampered("it is not a block device".into()))
    }
}

/// `p` with `.` and `..` taken out lexically (a `..` at the root stays at the root).
fn normalize(p: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Set the stamp attributes `trusted.shelf.<key>` on an open file.
pub fn set_identity_fd(file: &File, attrs: &BTreeMap<String, String>) -> io::Result<()> {
    for (k, v) in attrs {
        file.set_xattr(format!("{STAMP_PREFIX}{k}"), v.as_bytes())?;
    }
    Ok(())
}

/// Read every `trusted.shelf.*` attribute of an open file.
pub fn get_identity_fd(file: &File) -> io::Result<BTreeMap<String, String>> {
    read_prefixed(file.list_xattr()?, |n| file.get_xattr(n), STAMP_PREFIX)
}

/// Read every `user.shelf.*` attribute of an open file: the stamp of a shelf before
/// [`STAMP_PREFIX`], or a tenant's forgery; the two cannot be told apart.
pub fn get_legacy_identity_fd(file: &File) -> io::Result<BTreeMap<String, String>> {
    read_prefixed(
        file.list_xattr()?,
        |n| file.get_xattr(n),
        LEGACY_STAMP_PREFIX,
    )
}

/// Remove every `user.shelf.*` attribute of an open file.
pub fn remove_legacy_identity_fd(file: &File) -> io::Result<()> {
    for key in get_legacy_identity_fd(file)?.keys() {
        match file.remove_xattr(format!("{LEGACY_STAMP_PREFIX}{key}")) {
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            r => r?,
        }
    }
    Ok(())
}

/// Can shelfd stamp files in this directory? Writes and reads back a `trusted.shelf.*`
/// attribute on a scratch file: fails without CAP_SYS_ADMIN, or on a filesystem without
/// trusted extended attributes.
pub fn probe_stamp(dir: &Path) -> io::Result<()> {
    let path = dir.join(format!(".stamp-probe-{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let f = create_new(&path, 0o600)?;
        let attrs = [("probe".to_string(), "1".to_string())].into();
        set_identity_fd(&f, &attrs)?;
        match get_identity_fd(&f)?.get("probe").map(String::as_str) {
            Some("1") => Ok(()),
            _ => Err(io::Error::other("the attribute did not read back")),
        }
    })();
    let _ = std::fs::remove_file(&path);
    result
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
    fn dev_backing_stores_are_checked_without_following_links() {
        // Objects made under /dev/shm (tmpfs), at the depth of an LVM volume's /dev/VG/LV.
        let tag = format!("shelf-bs-{}", std::process::id());
        let at = |n: &str| std::path::PathBuf::from(format!("/dev/shm/{tag}-{n}"));
        /// Removes what the test made in /dev/shm, even when an assertion fails.
        struct Made(Vec<std::path::PathBuf>);
        impl Drop for Made {
            fn drop(&mut self) {
                for p in &self.0 {
                    let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
                }
            }
        }
        let _made = Made(
            ["abs", "chr", "udev", "lvm", "up", "file", "dir"]
                .map(at)
                .to_vec(),
        );
        let tampered = |p: &Path| match check_backing_store(p, "x") {
            Err(OpenError::Tampered(why)) => why,
            other => panic!("{}: {other:?}", p.display()),
        };
        std::os::unix::fs::symlink("/etc/hostname", at("abs")).unwrap();
        std::os::unix::fs::symlink("/dev/loop0", at("lvm")).unwrap();
        std::os::unix::fs::symlink("../../etc/hostname", at("up")).unwrap();
        std::os::unix::fs::symlink("../null", at("chr")).unwrap();
        std::os::unix::fs::symlink("../loop0", at("udev")).unwrap();
        std::fs::write(at("file"), b"x").unwrap();
        std::fs::create_dir(at("dir")).unwrap();
        std::os::unix::fs::symlink("/dev/loop0", at("dir").join("volume")).unwrap();
        let r = (
            tampered(&at("abs")),
            tampered(&at("chr")),
            check_backing_store(&at("udev"), "x"),
            tampered(&at("file")),
            tampered(&at("dir").join("volume")),
            tampered(Path::new("/dev/shm/../loop0")),
            check_backing_store(&at("lvm"), "x"),
            tampered(&at("up")),
        );
        eprintln!("{r:?}");
        assert!(r.0.contains("symbolic link to /etc/hostname"), "{}", r.0);
        assert!(
            r.7.contains("symbolic link to ../../etc/hostname"),
            "{}",
            r.7
        );
        assert!(r.1.contains("not a block device"), "{}", r.1);
        if Path::new("/dev/loop0").exists() {
            assert!(r.2.is_ok(), "udev's link to a block device: {:?}", r.2);
            assert!(
                r.6.is_ok(),
                "LVM's absolute link to a block device: {:?}",
                r.6
            );
        }
        assert!(r.3.contains("not a block device"), "{}", r.3);
        assert!(r.4.contains("not an LVM volume"), "{}", r.4);
        assert!(r.5.contains("not an LVM volume"), "{}", r.5);
        assert!(matches!(
            check_backing_store(Path::new("/dev/shelf-no-vg/lv"), "x"),
            Err(OpenError::Missing(_))
        ));
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

    /// Every kind of object a tenant can plant is refused, by what it is, without being
    /// opened for I/O (a FIFO would block) and without following a link out.
    #[test]
    fn the_walk_without_openat2_refuses_what_openat2_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("secret"), b"secret").unwrap();
        std::fs::create_dir_all(root.join("pool/a")).unwrap();
        std::fs::write(root.join("pool/a/volume"), b"v").unwrap();
        std::os::unix::fs::symlink("a", root.join("pool/l")).unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("pool/a/ln")).unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("pool/a/abs")).unwrap();
        let d = open_dir(&root.join("pool")).unwrap();
        let ro = OFlag::O_RDONLY;
        let walk = |rel: &str, flags| open_beneath_walk(&d, Path::new(rel), flags, Mode::empty());
        let both = |rel: &str, flags| {
            let w = walk(rel, flags).map(|_| ());
            let how = OpenHow::new()
                .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
            let o = nix::fcntl::openat2(&d, Path::new(rel), how).map(|_| ());
            (w, o)
        };
        // What both accept and both refuse.
        assert_eq!(both("a/volume", ro), (Ok(()), Ok(())));
        assert_eq!(both("./a/./volume", ro), (Ok(()), Ok(())));
        // Each refusal is the same error from both, so callers' messages agree.
        for (rel, want) in [
            ("a/ln", Errno::ELOOP),
            ("a/abs", Errno::ELOOP),
            ("../secret", Errno::EXDEV),
            ("a/../../secret", Errno::EXDEV),
            ("/etc/hostname", Errno::EXDEV),
            ("a/missing", Errno::ENOENT),
            ("a/volume/x", Errno::ENOTDIR),
        ] {
            let (w, o) = both(rel, ro);
            assert_eq!((w, o), (Err(want), Err(want)), "{rel}");
        }
        // A symbolic link on the way is refused (ENOTDIR or ELOOP), never followed.
        let w = walk("l/volume", ro).unwrap_err();
        assert!(matches!(w, Errno::ENOTDIR | Errno::ELOOP), "{w:?}");
        // Leaving the directory is EXDEV, as RESOLVE_BENEATH answers.
        assert_eq!(walk("../secret", ro).unwrap_err(), Errno::EXDEV);
        assert_eq!(walk("/etc/hostname", ro).unwrap_err(), Errno::EXDEV);
        // The last component as a link: ELOOP, or with O_PATH a handle on the link itself
        // (which open_checked refuses by its type).
        assert_eq!(walk("a/ln", ro).unwrap_err(), Errno::ELOOP);
        let h = File::from(walk("a/ln", OFlag::O_PATH).unwrap());
        let st = fstat(&h).unwrap();
        assert_eq!(
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()),
            SFlag::S_IFLNK
        );
    }

    #[test]
    fn a_user_shelf_stamp_is_no_identity_and_is_only_read_to_be_moved() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("shares/a")).unwrap();
        let vol = root.join("shares/a/volume");
        let f = create_new(&vol, 0o660).unwrap();
        // What a tenant's NFS client (or an earlier shelf) can write.
        for (k, v) in [("kind", "share"), ("id", "a"), ("name", "forged")] {
            xattr::set(&vol, format!("user.shelf.{k}"), v.as_bytes()).unwrap();
        }
        let d = open_dir(root).unwrap();
        let rel = Path::new("shares/a/volume");
        let expect = Expect {
            kind: "share",
            id: "a",
        };
        assert!(matches!(
            open_checked(&d, rel, expect, false),
            Err(OpenError::Unidentified)
        ));
        assert_eq!(get_identity_fd(&f).unwrap(), BTreeMap::new());
        let legacy = get_legacy_identity_fd(&open_regular(&d, rel, false).unwrap()).unwrap();
        assert_eq!(legacy.get("name").map(String::as_str), Some("forged"));
        let ident: BTreeMap<String, String> = [("kind", "share"), ("id", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        set_identity_fd(&f, &ident).unwrap();
        assert!(open_checked(&d, rel, expect, false).is_ok());
        assert_eq!(get_identity_fd(&f).unwrap(), ident);
        remove_legacy_identity_fd(&f).unwrap();
        assert_eq!(get_legacy_identity_fd(&f).unwrap(), BTreeMap::new());
        assert!(xattr::get(&vol, "trusted.shelf.id").unwrap().is_some());
        probe_stamp(root).unwrap();
        assert_eq!(
            std::fs::read_dir(root).unwrap().count(),
            1,
            "the probe left nothing"
        );
    }

    #[test]
    fn open_checked_refuses_every_planted_kind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let secret = root.join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        std::fs::create_dir_all(root.join("shares/a")).unwrap();
        let ident: BTreeMap<String, String> = [("kind", "share"), ("id", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let vol = root.join("shares/a/volume");
        let d = open_dir(root).unwrap();
        let rel = Path::new("shares/a/volume");
        let expect = Expect {
            kind: "share",
            id: "a",
        };
        let why = |write| match open_checked(&d, rel, expect, write) {
            Ok(_) => "ok".to_string(),
            Err(OpenError::Tampered(w)) => w,
            Err(OpenError::Unidentified) => "unidentified".into(),
            Err(OpenError::Missing(_)) => "missing".into(),
            Err(OpenError::Io(e)) => format!("io: {e}"),
        };
        assert_eq!(why(false), "missing");
        let f = create_new(&vol, 0o660).unwrap();
        assert_eq!(why(false), "unidentified");
        set_identity_fd(&f, &ident).unwrap();
        assert_eq!(why(true), "ok");
        let t0 = std::time::Instant::now();
        for _ in 0..1000 {
            open_checked(&d, rel, expect, true).unwrap();
        }
        eprintln!(
            "open_checked: {:.1} us per open (openat2, fstat, reopen, two fgetxattr)",
            t0.elapsed().as_secs_f64() * 1000.0
        );
        let other: BTreeMap<String, String> = [("id".to_string(), "b".to_string())].into();
        set_identity_fd(&f, &other).unwrap();
        assert_eq!(why(false), "it carries the identity of share b");
        drop(f);
        type Plant<'a> = (&'a str, &'a dyn Fn(&Path));
        let planted: [Plant; 4] = [
            ("it is a symbolic link, not a regular file", &|v| {
                std::os::unix::fs::symlink(&secret, v).unwrap()
            }),
            ("it has 2 hard links (a volume has one)", &|v| {
                std::fs::hard_link(&secret, v).unwrap()
            }),
            ("it is a FIFO, not a regular file", &|v| {
                nix::unistd::mkfifo(v, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }),
            ("it is a directory, not a regular file", &|v| {
                std::fs::create_dir(v).unwrap()
            }),
        ];
        for (want, plant) in planted {
            let _ = std::fs::remove_file(&vol);
            let _ = std::fs::remove_dir(&vol);
            plant(&vol);
            assert_eq!(why(true), want);
        }
        // A directory on the path replaced by a symbolic link is not followed either.
        std::fs::remove_dir(&vol).unwrap();
        std::fs::rename(root.join("shares/a"), root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("shares/a")).unwrap();
        assert_eq!(why(false), "its path goes through a symbolic link");
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    }
}
