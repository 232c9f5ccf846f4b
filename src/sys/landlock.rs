//! Landlock confinement for a command that interprets tenant bytes (`qemu-img convert`).
//!
//! The ruleset is built in shelfd before the fork (opening the allowed paths, adding the
//! rules); the child, between fork and exec, only clears close-on-exec on the descriptors
//! it inherits, sets `no_new_privs` and calls `landlock_restrict_self`: raw syscalls that
//! allocate nothing. After that the program can open for reading and executing only the
//! system directories of [`SYSTEM_READ_EXEC`], read only the files given with
//! [`Confinement::allow_read`], write only the files given with
//! [`Confinement::allow_write`], make no TCP connection (ABI 4) and reach no abstract unix
//! socket or other process by signal (ABI 6). Whatever an image names (a backing file, an
//! external data file, an extent) is refused by the kernel.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What a confined program may read and execute: the program and its shared libraries
/// and block modules. Nothing under `/etc` but the loader's cache. (`/dev/null` may also
/// be read and written.)
pub const SYSTEM_READ_EXEC: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
];

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
/// Every filesystem right of ABI 1 (execute through make-symlink).
const FS_ABI1: u64 = (1 << 13) - 1;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;
/// The rights a rule on a file (not a directory) may carry.
const FS_FILE_RIGHTS: u64 = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version this kernel offers (`None`: Landlock is off or absent).
pub fn abi_version() -> Option<u32> {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the syscall only returns
    // the ABI version; it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

/// A ruleset ready to be applied to a child, and the descriptors the child inherits.
#[derive(Debug)]
pub struct Confinement {
    ruleset: OwnedFd,
    handled_fs: u64,
    inherit: Vec<OwnedFd>,
}

impl Confinement {
    /// A ruleset that handles every right this kernel knows and allows only reading and
    /// executing [`SYSTEM_READ_EXEC`]. Fails when Landlock is not available. Blocking (it
    /// opens and fstats those paths, as [`Confinement::allow_write`] opens its file): call
    /// it off the event loop (STYLE rule 7).
    pub fn new() -> io::Result<Confinement> {
        let abi = abi_version().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "Landlock is not available on this kernel",
            )
        })?;
        let mut handled_fs = FS_ABI1;
        if abi >= 2 {
            handled_fs |= FS_REFER;
        }
        if abi >= 3 {
            handled_fs |= FS_TRUNCATE;
        }
        if abi >= 5 {
            handled_fs |= FS_IOCTL_DEV;
        }
        let attr = RulesetAttr {
            handled_access_fs: handled_fs,
            handled_access_net: if abi >= 4 {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        };
        // SAFETY: `attr` is a valid, initialised ruleset attribute of the size given; the
        // kernel only reads it. Fields this ABI does not know are zero, as it requires.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        let ruleset = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mut c = Confinement {
            ruleset,
            handled_fs,
            inherit: Vec::new(),
        };
        for p in SYSTEM_READ_EXEC {
            match File::open(p) {
                Ok(f) => c.add_rule(&f, FS_READ_FILE | FS_READ_DIR | FS_EXECUTE)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // qemu opens /dev/null read-write to probe for OFD locks.
        c.add_rule(&File::open("/dev/null")?, FS_READ_FILE | FS_WRITE_FILE)?;
        Ok(c)
    }

    fn add_rule(&mut self, target: &impl AsFd, access: u64) -> io::Result<()> {
        let is_dir = File::from(target.as_fd().try_clone_to_owned()?)
            .metadata()?
            .is_dir();
        let mut allowed = access & self.handled_fs;
        if !is_dir {
            allowed &= FS_FILE_RIGHTS;
        }
        let attr = PathBeneathAttr {
            allowed_access: allowed,
            parent_fd: target.as_fd().as_raw_fd(),
        };
        // SAFETY: `attr` is a valid path-beneath attribute naming an open descriptor, and
        // `self.ruleset` is a Landlock ruleset; the kernel only reads both.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.ruleset.as_raw_fd(),
                RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Let the child read this file (the rule holds for the file itself, by identity), and
    /// inherit a descriptor of it; returns the number it has in the child (`/dev/fd/N`).
    pub fn allow_read(&mut self, file: &File) -> io::Result<RawFd> {
        self.add_rule(file, FS_READ_FILE)?;
        let fd = file.as_fd().try_clone_to_owned()?;
        let n = fd.as_raw_fd();
        self.inherit.push(fd);
        Ok(n)
    }

    /// Let the child write, read and truncate the existing file at `path` (and nothing
    /// else under its directory).
    pub fn allow_write(&mut self, path: &Path) -> io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        self.add_rule(&f, FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE)
    }

    /// Let the child write, read and truncate the open file `file` (the rule holds for that
    /// inode, whatever path the child opens it by).
    pub fn allow_write_file(&mut self, file: &File) -> io::Result<()> {
        self.add_rule(file, FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE)
    }

    /// Apply the ruleset to the calling process. Called in the child between fork and
    /// exec: it makes only async-signal-safe syscalls and allocates nothing.
    pub fn apply_in_child(&self) -> io::Result<()> {
        for fd in &self.inherit {
            // SAFETY: clearing FD_CLOEXEC on a descriptor this process holds open.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: restricting the calling thread with a ruleset descriptor it holds.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                self.ruleset.as_raw_fd(),
                0u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confined_child_reads_only_what_it_was_given() {
        if abi_version().is_none() {
            panic!("Landlock is not available on this machine's kernel");
        }
        let d = tempfile::tempdir().unwrap();
        let (given, other) = (d.path().join("given"), d.path().join("other"));
        std::fs::write(&given, b"given").unwrap();
        std::fs::write(&other, b"other").unwrap();
        let mut c = Confinement::new().unwrap();
        let f = File::open(&given).unwrap();
        let n = c.allow_read(&f).unwrap();
        let c = std::sync::Arc::new(c);
        let run = |path: String| {
            use std::os::unix::process::CommandExt;
            let c = c.clone();
            let mut cmd = std::process::Command::new("/bin/cat");
            cmd.arg(path);
            // SAFETY: apply_in_child makes only async-signal-safe syscalls.
            unsafe {
                cmd.pre_exec(move || c.apply_in_child());
            }
            cmd.output().unwrap()
        };
        let ok = run(format!("/dev/fd/{n}"));
        assert_eq!(ok.stdout, b"given", "{ok:?}");
        let denied = run(other.display().to_string());
        assert!(!denied.status.success() && denied.stdout.is_empty());
        let shadow = run("/etc/shadow".into());
        assert!(!shadow.status.success() && shadow.stdout.is_empty());
    }
}
