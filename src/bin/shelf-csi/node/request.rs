//! Checks on what the CO sends (trust: the CO, i.e. kubelet, is the only client of the
//! socket, but its fields come from users' PVs and StorageClasses): every path absolute
//! and free of `..`, the volume id present, the capability present and one the node can
//! serve. Each failure is INVALID_ARGUMENT naming the field (CSI spec, "Error Scheme").

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::volume_capability::AccessType;
use bpfman_csi::v1::VolumeCapability;
use tonic::Status;

/// The filesystems the node makes on a blank block volume.
pub const FILESYSTEMS: &[&str] = &["ext4", "xfs"];

/// The filesystem made when neither the capability nor the volume context names one.
pub const DEFAULT_FS: &str = "ext4";

/// The volume id, which must be present.
pub fn volume_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    Ok(id)
}

/// A path field: present, absolute, without `.`/`..` components or NUL.
pub fn path(field: &str, value: &str) -> Result<PathBuf, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    let p = Path::new(value);
    let bad = !p.is_absolute()
        || value.contains('\0')
        || value.split('/').any(|c| c == ".." || c == ".")
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
    if bad {
        return Err(Status::invalid_argument(format!(
            "{field} {value:?} must be an absolute path without `.` or `..`"
        )));
    }
    Ok(p.components().collect())
}

/// Check that `path` (already [`path`]-checked) lies beneath `root` (the configured
/// kubelet directory) and that no component of it below `root` is a symbolic link: the
/// CO's paths come from users' objects, and the node acts on them as root (a target of
/// `/etc/shadow`, or a link under kubelet's tree pointing there, must not be removed or
/// mounted over). Components that do not exist yet end the walk (the node creates them,
/// without following links: [`create_file`]). INVALID_ARGUMENT naming the field.
pub fn beneath(root: &Path, field: &str, path: &Path) -> Result<(), Status> {
    let rest = path
        .strip_prefix(root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{field} {} is not beneath the kubelet directory {} (node.kubelet_dir)",
                path.display(),
                root.display()
            ))
        })?;
    let mut at = root.to_path_buf();
    for c in rest.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Status::invalid_argument(format!(
                    "{field} {}: {} is a symbolic link; the node follows none",
                    path.display(),
                    at.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Status::internal(format!("{field} {}: {e}", at.display()))),
        }
    }
    Ok(())
}

/// Create the empty regular file `path` (mode 0600) unless a regular file is there:
/// never through a symbolic link (O_NOFOLLOW) and never over something else (O_EXCL).
pub fn create_file(path: &Path) -> Result<(), Status> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| Status::internal(format!("{}: {e}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => return Ok(()),
        Ok(_) => {
            return Err(Status::failed_precondition(format!(
                "{} exists and is not a regular file",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
        .map_err(err)
}

/// Remove what the node would have created at `path`: an empty directory or a
/// zero-length regular file; nothing there is fine. Anything else (a file with data, a
/// link, a device) stays, FAILED_PRECONDITION.
pub fn remove_created(path: &Path) -> Result<(), Status> {
    let err = |e: std::io::Error| Status::internal(format!("{}: {e}", path.display()));
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(path),
        Ok(m) if m.file_type().is_file() && m.len() == 0 => std::fs::remove_file(path),
        Ok(_) => {
            return Err(Status::failed_precondition(format!(
                "{} is not an empty directory or an empty file the node made; left alone",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(err),
    }
}

/// What a VolumeCapability asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A filesystem.
    Mount {
        /// The filesystem asked for (empty: the volume context's or the default).
        fs_type: String,
        /// Options for `mount -o`.
        flags: Vec<String>,
    },
    /// A raw block device.
    Block,
}

/// The checked capability and whether its access mode is read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// Mount or block.
    pub access: Access,
    /// The access mode is a reader-only one.
    pub read_only_mode: bool,
}

/// Check the capability: present, with an access type and a known access mode; mount
/// flags free of separators and spaces (they become one `mount -o` argument).
pub fn capability(cap: Option<&VolumeCapability>) -> Result<Capability, Status> {
    let cap = cap.ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    let access = match &cap.access_type {
        Some(AccessType::Block(_)) => Access::Block,
        Some(AccessType::Mount(m)) => {
            for f in &m.mount_flags {
                if f.is_empty()
                    || f.contains(|c: char| c == ',' || c.is_whitespace() || c.is_control())
                {
                    return Err(Status::invalid_argument(format!(
                        "mount flag {f:?}: one option per flag, without commas or spaces"
                    )));
                }
            }
            if !m.fs_type.is_empty()
                && !FILESYSTEMS.contains(&m.fs_type.as_str())
                && m.fs_type != "nfs"
                && m.fs_type != "nfs4"
            {
                return Err(Status::invalid_argument(format!(
                    "fs_type {:?}: this node makes {} (or mounts nfs)",
                    m.fs_type,
                    FILESYSTEMS.join(", ")
                )));
            }
            Access::Mount {
                fs_type: m.fs_type.clone(),
                flags: m.mount_flags.clone(),
            }
        }
        None => {
            return Err(Status::invalid_argument(
                "volume_capability needs an access type (block or mount)",
            ))
        }
    };
    let mode = cap
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .unwrap_or(Mode::Unknown);
    if mode == Mode::Unknown {
        return Err(Status::invalid_argument(
            "volume_capability needs a known access mode",
        ));
    }
    Ok(Capability {
        access,
        read_only_mode: matches!(mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly),
    })
}

/// A required key of a string map (publish_context, volume_context), as
/// INVALID_ARGUMENT naming the map and the key when absent.
pub fn required<'a>(
    map: &'a HashMap<String, String>,
    what: &str,
    key: &str,
) -> Result<&'a str, Status> {
    match map.get(key).map(String::as_str) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Status::invalid_argument(format!("{what} has no {key:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfman_csi::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};
    use tonic::Code;

    fn mount_cap(fs: &str, flags: &[&str], mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: flags.iter().map(|s| s.to_string()).collect(),
                volume_mount_group: String::new(),
            })),
        }
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert_eq!(path("p", "/a/b/").unwrap(), Path::new("/a/b"));
        for bad in ["", "rel", "/a/../b", "/a/./b", "/..", "/a/b/.."] {
            let e = path("target_path", bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
            assert!(e.message().contains("target_path"), "{}", e.message());
        }
    }

    #[test]
    fn paths_must_lie_beneath_the_kubelet_dir_without_links() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(r.join("pods")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("pods/link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), r.join("flink")).unwrap();
        beneath(r, "target_path", &r.join("pods/new/deeper")).unwrap();
        beneath(r, "target_path", &r.join("pods")).unwrap();
        for bad in [
            Path::new("/etc/shadow").to_path_buf(),
            r.to_path_buf(),
            r.join("pods/link/x"),
            r.join("pods/link"),
            r.join("flink"),
        ] {
            let e = beneath(r, "target_path", &bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
            assert!(e.message().contains("target_path"), "{}", e.message());
        }
    }

    #[test]
    fn files_are_created_without_following_and_only_empty_ones_removed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let victim = r.join("victim");
        std::fs::write(&victim, b"data").unwrap();
        std::os::unix::fs::symlink(&victim, r.join("link")).unwrap();
        assert!(create_file(&r.join("link")).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"data");
        create_file(&r.join("new")).unwrap();
        create_file(&r.join("new")).unwrap();
        remove_created(&r.join("new")).unwrap();
        assert!(!r.join("new").exists());
        remove_created(&r.join("new")).unwrap();
        let e = remove_created(&victim).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(victim.exists(), "a file with data is never removed");
        assert!(remove_created(&r.join("link")).is_err());
        assert!(victim.exists());
        std::fs::create_dir(r.join("d")).unwrap();
        std::fs::write(r.join("d/f"), b"x").unwrap();
        assert!(remove_created(&r.join("d")).is_err(), "not empty");
        std::fs::remove_file(r.join("d/f")).unwrap();
        remove_created(&r.join("d")).unwrap();
    }

    #[test]
    fn capabilities_are_checked() {
        let c = capability(Some(&mount_cap(
            "xfs",
            &["noatime"],
            Mode::SingleNodeWriter,
        )))
        .unwrap();
        assert_eq!(
            c.access,
            Access::Mount {
                fs_type: "xfs".into(),
                flags: vec!["noatime".into()]
            }
        );
        assert!(!c.read_only_mode);
        let c = capability(Some(&mount_cap("", &[], Mode::MultiNodeReaderOnly))).unwrap();
        assert!(c.read_only_mode);
        let block = VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
            access_type: Some(AccessType::Block(BlockVolume {})),
        };
        assert_eq!(capability(Some(&block)).unwrap().access, Access::Block);
        let bad = [
            None,
            Some(mount_cap("btrfs", &[], Mode::SingleNodeWriter)),
            Some(mount_cap("ext4", &["a,b"], Mode::SingleNodeWriter)),
            Some(mount_cap("ext4", &["a b"], Mode::SingleNodeWriter)),
            Some(mount_cap("ext4", &[], Mode::Unknown)),
            Some(VolumeCapability {
                access_mode: None,
                access_type: None,
            }),
        ];
        for cap in bad {
            let e = capability(cap.as_ref()).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{cap:?}");
        }
    }
}
