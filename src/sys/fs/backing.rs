//! Checking an iSCSI backing store before a target daemon is pointed at it.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
