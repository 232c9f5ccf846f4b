//! The tests' side of the [`rig`](super::rig): its pieces made for one test (named after
//! the test, on private ports, panicking when the machine cannot give them), and [`Rig`],
//! the usual set.

use std::path::{Path, PathBuf};

use super::rig::{self, ExportsFile, Tgtd, Xfs};
use super::{Daemon, Layout};

/// The IQN prefix of the targets shelfd makes on a test's tgtd (see [`Tgtd::config`]).
pub const IQN_PREFIX: &str = "iqn.2026-11.org.example.shelf";

/// A scratch directory removed on drop.
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("shelf-test-{tag}-"))
        .tempdir_in("/var/tmp")
        .expect("scratch dir")
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test's daemon).
pub fn free_port() -> u16 {
    rig::free_port().unwrap_or_else(|e| panic!("{e}"))
}

/// A tgtd control port no other test uses at the same time.
pub fn free_control_port() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    2000 + (std::process::id() % 500) * 16 + NEXT.fetch_add(1, Ordering::SeqCst) % 16
}

pub use rig::xfs::unmount_patiently;

/// A new scratch directory holding a sparse image `image` of `size` bytes, formatted by
/// `mkfs` (the image's path is appended) and loop-mounted on its `mnt`; unmounted and
/// removed on drop.
pub fn loop_mounted(tag: &str, image: &str, size: u64, mkfs: &[&str]) -> Xfs {
    Xfs::make(scratch(tag).keep(), image, size, mkfs).unwrap_or_else(|e| panic!("{e}"))
}

impl Xfs {
    /// Make and mount an XFS of `size` bytes (sparse image) with reflink.
    pub fn new(tag: &str, size: u64) -> Xfs {
        Xfs::with_reflink(tag, size, true)
    }

    /// Make and mount an XFS of `size` bytes, with or without reflink support.
    pub fn with_reflink(tag: &str, size: u64, reflink: bool) -> Xfs {
        Xfs::format(scratch(tag).keep(), size, reflink).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Tgtd {
    /// Start a tgtd on a free port and control port, and wait until tgtadm reaches it.
    pub fn start() -> Tgtd {
        Tgtd::launch(free_port(), free_control_port(), None, false)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Kill tgtd (it loses every target) and start a fresh one on the same ports.
    pub fn restart(&mut self) {
        self.respawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kill tgtd (it loses every target); `restart` starts a fresh one on the same ports.
    pub fn stop(&mut self) {
        self.halt();
    }

    /// `tgtadm --op show --mode target`.
    pub fn show(&self) -> String {
        self.tgtadm(&["--op", "show", "--mode", "target"]).unwrap()
    }

    /// Send a signal to tgtd (SIGSTOP makes every tgtadm hang until SIGCONT; Drop's SIGKILL
    /// still ends a stopped tgtd).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        self.send(sig).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Config lines pointing shelfd at this tgtd.
    pub fn config(&self) -> String {
        self.config_with_prefix(IQN_PREFIX)
    }
}

impl ExportsFile {
    /// A fresh file name for one test (the file itself is written by shelfd).
    pub fn new(tag: &str) -> ExportsFile {
        let name = format!("shelf-test-{tag}-{}-{}", std::process::id(), free_port());
        ExportsFile::named(&name).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The usual set: shelfd (reconcile off) on a scratch XFS, pool `<mount>/pool`, with a
/// private tgtd and, for NFS, a private exports file. Fields drop in order: the daemon,
/// then tgtd, the exports file, the filesystem.
#[derive(Debug)]
pub struct Rig {
    /// The daemon.
    pub d: Daemon,
    /// Its tgtd.
    pub tgtd: Tgtd,
    /// Its exports file (in its config only when made with NFS).
    pub ef: ExportsFile,
    /// The filesystem under it all.
    pub xfs: Xfs,
}

impl Rig {
    /// iSCSI and NFS on a 512 MiB XFS.
    pub fn new(tag: &str) -> Rig {
        Rig::start(tag, 512 << 20, "", true)
    }

    /// On an XFS of `size` bytes, with `extra` config (before the drivers' sections); the
    /// kernel NFS driver writes the private exports file when `nfs`, else it points at
    /// nothing (as [`Layout`] leaves it).
    pub fn start(tag: &str, size: u64, extra: &str, nfs: bool) -> Rig {
        let xfs = Xfs::new(tag, size);
        let tgtd = Tgtd::start();
        let ef = ExportsFile::new(tag);
        let nfs = if nfs { ef.config() } else { String::new() };
        let layout = Layout::on_xfs(
            &xfs,
            &format!("reconcile_interval = 0\n{extra}\n{}{nfs}", tgtd.config()),
        );
        let d = Daemon::start(&layout);
        Rig { d, tgtd, ef, xfs }
    }

    /// The default pool's directory.
    pub fn pool(&self) -> PathBuf {
        self.xfs.mount.join("pool")
    }

    /// The scratch directory (image, configs, state, logs).
    pub fn base(&self) -> &Path {
        self.xfs.base()
    }
}

/// Unmounts (thawing first) whatever is mounted under a directory (a shelfd's mount base)
/// when dropped, so the pool's XFS can be unmounted even after a failure.
#[derive(Debug)]
pub struct MountsUnder(pub PathBuf);

impl Drop for MountsUnder {
    fn drop(&mut self) {
        use std::process::Command;
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in shelf::pool::format::parse_mountinfo(&text).iter().rev() {
            if m.target.starts_with(&self.0) {
                let _ = Command::new("fsfreeze").arg("-u").arg(&m.target).output();
                let _ = Command::new("umount").arg(&m.target).output();
            }
        }
    }
}
