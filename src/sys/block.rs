//! Block device facts from sysfs (`/sys/dev/block/<major>:<minor>/queue/`). Every call
//! blocks: run them on `smol::unblock`.

use std::path::Path;

/// Whether the block device at `path` takes discards: its queue's `discard_max_bytes` is
/// not 0 (a thin LV's is: dm-thin unmaps the blocks; a thin pool made with `--discards
/// ignore` gives its LVs 0). `false` for anything that is not a block device.
pub fn discards(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.file_type().is_block_device() {
        return false;
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    std::fs::read_to_string(format!(
        "/sys/dev/block/{major}:{minor}/queue/discard_max_bytes"
    ))
    .is_ok_and(|s| parse_discard_max(&s) > 0)
}

/// `discard_max_bytes` as sysfs shows it (a number and a newline); 0 when unreadable.
fn parse_discard_max(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_missing_paths_do_not_discard() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("volume");
        std::fs::write(&f, b"x").unwrap();
        assert!(!discards(&f));
        assert!(!discards(&dir.path().join("gone")));
    }

    #[test]
    fn sysfs_values() {
        // A thin LV's (dm-thin: its pool's chunk size times the bio limit) and a disk's
        // without discard.
        assert_eq!(parse_discard_max("17179869184\n"), 17179869184);
        assert_eq!(parse_discard_max("0\n"), 0);
        assert_eq!(parse_discard_max(""), 0);
    }
}
