//! Formatted shares: make a filesystem on a share's volume, mount it under the mount base,
//! freeze it around snapshots, grow it, unmount it. Works on a volume file (through a loop
//! device that the kernel frees on unmount) or on a block device (an LV).
//!
//! Every step goes through the command runner; argv builders and the mount-table parser
//! are pure functions tested below.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{FsKind, Share};
use crate::sys::cmd::{Cmd, CmdError, Runner};

/// Formats, mounts and freezes formatted shares.
#[derive(Debug, Clone)]
pub struct Formatter {
    runner: Runner,
    mount_base: PathBuf,
}

/// One line of `/proc/self/mountinfo` that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount point.
    pub target: PathBuf,
    /// The device or loop device mounted there.
    pub source: String,
    /// The filesystem type.
    pub fstype: String,
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let target = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next()?;
            Some(Mount {
                target: PathBuf::from(unescape(target)),
                source: unescape(source),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// `mkfs` for a volume: XFS with reflink (so the share's own files can be cloned), ext4
/// without lazy init (the whole volume is ready when the reply says so).
pub fn mkfs_cmd(fs: FsKind, volume: &Path, label: &str) -> Cmd {
    let v = volume.display().to_string();
    match fs {
        FsKind::Xfs => Cmd::new("mkfs.xfs").args(["-q", "-f", "-m", "reflink=1", "-L", label, &v]),
        FsKind::Ext4 => Cmd::new("mkfs.ext4").args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            "-L",
            label,
            &v,
        ]),
    }
}

/// `mount` of a volume: through a loop device when it is a file. XFS gets `nouuid`, so a
/// clone (which has its origin's UUID) mounts next to its origin. A thin volume gets
/// `discard`: blocks the filesystem frees (a tenant's deletes over NFS) are discarded at
/// once, which a loop device turns into holes punched in the volume file and a thin LV
/// into freed thin-pool blocks. A preallocated one never does (its blocks stay allocated).
pub fn mount_cmd(fs: FsKind, volume: &Path, target: &Path, is_file: bool, thin: bool) -> Cmd {
    let mut opts = vec!["nodev", "nosuid"];
    if is_file {
        opts.push("loop");
    }
    if thin {
        opts.push("discard");
    }
    if fs == FsKind::Xfs {
        opts.push("nouuid");
    }
    Cmd::new("mount").args([
        "-t".to_string(),
        fs.as_str().to_string(),
        "-o".to_string(),
        opts.join(","),
        volume.display().to_string(),
        target.display().to_string(),
    ])
}

/// The label a share's filesystem gets (both filesystems allow 12 characters).
fn label(share: &Share) -> String {
    format!("shelf{}", &share.id.replace('-', "")[..7])
}

impl Formatter {
    /// A formatter mounting under `mount_base`.
    pub fn new(runner: Runner, mount_base: PathBuf) -> Self {
        Formatter { runner, mount_base }
    }

    /// Where the share is mounted.
    pub fn mountpoint(&self, share_id: &str) -> PathBuf {
        self.mount_base.join(share_id)
    }

    async fn run(&self, cmd: Cmd) -> Result<()> {
        self.runner.run(&cmd).await.map(|_| ()).map_err(Error::from)
    }

    /// The mount table of this process (read off the event loop).
    pub async fn mounts(&self) -> Vec<Mount> {
        let text = smol::unblock(|| std::fs::read_to_string("/proc/self/mountinfo"))
            .await
            .unwrap_or_default();
        parse_mountinfo(&text)
    }

    /// What is mounted at the share's mount point, if anything.
    pub async fn mounted(&self, share_id: &str) -> Option<Mount> {
        let mp = self.mountpoint(share_id);
        self.mounts()
            .await
            .into_iter()
            .rev()
            .find(|m| m.target == mp)
    }

    /// Make the filesystem on a new share's volume.
    pub async fn format(&self, share: &Share, volume: &Path) -> Result<()> {
        let fs = share.filesystem.unwrap_or(FsKind::Xfs);
        self.run(mkfs_cmd(fs, volume, &label(share))).await
    }

    /// Mount the share (a no-op when it is mounted already) and make sure it is not left
    /// frozen by a snapshot a crash interrupted.
    pub async fn mount(&self, share: &Share, volume: &Path) -> Result<PathBuf> {
        let fs = share.filesystem.unwrap_or(FsKind::Xfs);
        let mp = self.mountpoint(&share.id);
        if self.mounted(&share.id).await.is_some() {
            self.thaw(&mp).await;
            return Ok(mp);
        }
        let (m, v) = (mp.clone(), volume.to_path_buf());
        let is_file = smol::unblock(move || -> std::io::Result<bool> {
            std::fs::create_dir_all(&m)?;
            Ok(std::fs::metadata(&v)?.is_file())
        })
        .await
        .map_err(|e| Error::io(format!("preparing {}", mp.display()), e))?;
        self.run(mount_cmd(fs, volume, &mp, is_file, share.sparse))
            .await?;
        Ok(mp)
    }

    /// Unmount the share (a no-op when it is not mounted) and remove its mount point.
    pub async fn unmount(&self, share_id: &str) -> Result<()> {
        let mp = self.mountpoint(share_id);
        if self.mounted(share_id).await.is_some() {
            self.thaw(&mp).await;
            self.run(Cmd::new("umount").arg(mp.display().to_string()))
                .await?;
        }
        let m = mp.clone();
        match smol::unblock(move || std::fs::remove_dir(&m)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", mp.display()), e)),
        }
    }

    /// Freeze the filesystem (writes block until [`Formatter::thaw`]).
    pub async fn freeze(&self, mp: &Path) -> Result<()> {
        self.run(Cmd::new("fsfreeze").args(["-f".to_string(), mp.display().to_string()]))
            .await
    }

    /// Thaw the filesystem; succeeds when it was not frozen.
    pub async fn thaw(&self, mp: &Path) {
        let cmd = Cmd::new("fsfreeze").args(["-u".to_string(), mp.display().to_string()]);
        match self.runner.run(&cmd).await {
            Ok(_) => log::info!("thawed {}", mp.display()),
            // EINVAL: it was not frozen, which is the usual case.
            Err(CmdError::Failed { .. }) => {}
            Err(e) => log::warn!("thawing {}: {e}", mp.display()),
        }
    }

    /// The volume grew: make the loop device and the filesystem see it.
    pub async fn grow(&self, share: &Share) -> Result<()> {
        let Some(m) = self.mounted(&share.id).await else {
            // Not mounted: it grows when next mounted (XFS and ext4 both need a mount).
            return Ok(());
        };
        if m.source.starts_with("/dev/loop") {
            self.run(Cmd::new("losetup").args(["-c", &m.source]))
                .await?;
        }
        match share.filesystem.unwrap_or(FsKind::Xfs) {
            FsKind::Xfs => {
                self.run(
                    Cmd::new("xfs_growfs").args(["-d".to_string(), m.target.display().to_string()]),
                )
                .await
            }
            FsKind::Ext4 => self.run(Cmd::new("resize2fs").arg(m.source.clone())).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime shared:1 - xfs /dev/loop3 rw,nouuid\n\
                    37 35 98:0 / /srv rw - ext4 /dev/sda1 rw\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/a b"));
        assert_eq!(m[0].source, "/dev/loop3");
        assert_eq!(m[0].fstype, "xfs");
    }

    #[test]
    fn commands_are_argv_vectors() {
        let c = mkfs_cmd(FsKind::Xfs, Path::new("/p/v"), "shelfabc");
        assert_eq!(
            c.argv(),
            ["-q", "-f", "-m", "reflink=1", "-L", "shelfabc", "/p/v"]
        );
        let m = mount_cmd(
            FsKind::Xfs,
            Path::new("/p/v"),
            Path::new("/m/x"),
            true,
            false,
        );
        assert_eq!(
            m.argv(),
            [
                "-t",
                "xfs",
                "-o",
                "nodev,nosuid,loop,nouuid",
                "/p/v",
                "/m/x"
            ]
        );
        let m = mount_cmd(
            FsKind::Xfs,
            Path::new("/p/v"),
            Path::new("/m/x"),
            true,
            true,
        );
        assert_eq!(m.argv()[3], "nodev,nosuid,loop,discard,nouuid");
        let m = mount_cmd(
            FsKind::Ext4,
            Path::new("/dev/vg/lv"),
            Path::new("/m/x"),
            false,
            true,
        );
        assert_eq!(
            m.argv(),
            [
                "-t",
                "ext4",
                "-o",
                "nodev,nosuid,discard",
                "/dev/vg/lv",
                "/m/x"
            ]
        );
    }
}
