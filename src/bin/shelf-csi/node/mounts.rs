//! Mounts: what is mounted where (parsed from `/proc/self/mountinfo`, a kernel-written
//! file the node trusts), and the `mount`/`umount` argvs the node runs through its one
//! runner ([`Tools`]). Parsing and argv building are pure and tested here.

use std::path::{Path, PathBuf};

use tonic::Status;

use super::tools::{offload, Tools};

/// One line of mountinfo, the fields the node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem's device.
    pub dev: String,
    /// The directory of that filesystem mounted here (`/` for a whole filesystem, the
    /// file or directory for a bind mount).
    pub root: String,
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// The per-mount options (`rw`/`ro`, `nosuid`, ...).
    pub options: Vec<String>,
    /// The filesystem type.
    pub fs_type: String,
    /// The mount source (a device, `host:/path`, or a pseudo name).
    pub source: String,
}

impl MountEntry {
    /// Whether `other` mounts the same thing (same filesystem and directory of it).
    pub fn same_source(&self, other: &MountEntry) -> bool {
        self.dev == other.dev && self.root == other.root
    }

    /// Whether this mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(o)) => {
                let v = o.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text (proc(5)): `id parent major:minor root mount_point options
/// [optional...] - fs_type source super_options`. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 2 {
                return None;
            }
            Some(MountEntry {
                dev: l[2].to_string(),
                root: unescape(l[3]),
                mount_point: PathBuf::from(unescape(l[4])),
                options: l[5].split(',').map(str::to_string).collect(),
                fs_type: r[0].to_string(),
                source: unescape(r[1]),
            })
        })
        .collect()
}

/// The mounts of this process's mount namespace (read off the runtime: the kernel
/// takes locks to produce mountinfo).
pub async fn mounts() -> Result<Vec<MountEntry>, Status> {
    offload("reading /proc/self/mountinfo", || {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Status::internal(format!("/proc/self/mountinfo: {e}")))?;
        Ok(parse_mountinfo(&text))
    })
    .await
}

/// The topmost mount at exactly `path` (after the last one mounted over it), if any.
pub async fn mount_at(path: &Path) -> Result<Option<MountEntry>, Status> {
    Ok(mounts().await?.into_iter().rfind(|m| m.mount_point == path))
}

/// Whether something is mounted at exactly `path`.
pub async fn is_mounted(path: &Path) -> Result<bool, Status> {
    Ok(mount_at(path).await?.is_some())
}

/// `mount [-t fs_type] [-o options] source target`.
pub fn mount_argv(
    source: &str,
    target: &Path,
    fs_type: Option<&str>,
    options: &[String],
) -> Vec<String> {
    let mut argv = Vec::new();
    if let Some(t) = fs_type {
        argv.extend(["-t".to_string(), t.to_string()]);
    }
    if !options.is_empty() {
        argv.extend(["-o".to_string(), options.join(",")]);
    }
    argv.extend([
        "--".to_string(),
        source.to_string(),
        target.to_string_lossy().into_owned(),
    ]);
    argv
}

/// Mount `source` on `target`.
pub async fn mount(
    tools: &Tools,
    source: &str,
    target: &Path,
    fs_type: Option<&str>,
    options: &[String],
) -> Result<(), Status> {
    let argv = mount_argv(source, target, fs_type, options);
    tools.run(tools.cmd("mount")?.args(argv)).await.map(|_| ())
}

/// Bind-mount `source` on `target`, then make the bind read-only when asked (a bind
/// mount takes `ro` only on a remount). A failed remount unmounts the bind again, so a
/// read-only publish is never left writable.
pub async fn bind(
    tools: &Tools,
    source: &Path,
    target: &Path,
    read_only: bool,
) -> Result<(), Status> {
    let src = source.to_string_lossy();
    mount(tools, &src, target, None, &["bind".to_string()]).await?;
    if read_only {
        let opts = ["remount".to_string(), "bind".to_string(), "ro".to_string()];
        if let Err(e) = mount(tools, "none", target, None, &opts).await {
            let _ = unmount(tools, target).await;
            return Err(e);
        }
    }
    Ok(())
}

/// Unmount `target` when something is mounted there; nothing when not.
pub async fn unmount(tools: &Tools, target: &Path) -> Result<(), Status> {
    if !is_mounted(target).await? {
        return Ok(());
    }
    let cmd = tools.cmd("umount")?.arg(target.to_string_lossy());
    tools.run(cmd).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the kernel writes them (recorded on this machine: a tmpfs, a read-only
    /// bind mount of it, and a path with a space).
    const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
80 29 0:45 / /tmp/s/staging rw,relatime shared:40 - tmpfs tmpfs rw,size=1024k
81 29 0:45 / /tmp/s/target ro,relatime shared:40 - tmpfs tmpfs rw,size=1024k
82 29 7:3 / /tmp/with\\040space rw,relatime - ext4 /dev/loop3 rw
bad line
";

    #[test]
    fn parses_mount_points_options_and_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, Path::new("/tmp/s/staging"));
        assert!(!m[1].read_only());
        assert!(m[2].read_only());
        assert_eq!(m[2].dev, "0:45");
        assert_eq!(m[3].mount_point, Path::new("/tmp/with space"));
        assert_eq!(m[3].source, "/dev/loop3");
        assert_eq!(m[3].fs_type, "ext4");
    }

    #[test]
    fn unescape_leaves_a_lone_backslash() {
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    #[test]
    fn mount_argv_orders_type_options_source_target() {
        let argv = mount_argv(
            "h:/e",
            Path::new("/s"),
            Some("nfs4"),
            &["vers=4.2".into(), "ro".into()],
        );
        assert_eq!(
            argv,
            ["-t", "nfs4", "-o", "vers=4.2,ro", "--", "h:/e", "/s"]
        );
        assert_eq!(
            mount_argv("-d", Path::new("/t"), None, &[]),
            ["--", "-d", "/t"],
            "a source is never an option"
        );
    }
}
