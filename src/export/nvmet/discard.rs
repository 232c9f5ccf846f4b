//! Whether an nvmet namespace deallocates. nvmet's controllers always advertise Dataset
//! Management (Identify Controller's ONCS), so every host may send a deallocate; what it
//! does depends on the namespace's backing (drivers/nvme/target/io-cmd-file.c,
//! io-cmd-bdev.c): a file's range is punched out (`fallocate(PUNCH_HOLE|KEEP_SIZE)`), a
//! block device's is discarded, and on a device that cannot discard the command succeeds
//! doing nothing. So a thin LV's namespace gives the blocks back to the thin pool, a
//! sparse file's gives them back to the filesystem. nvmet has no switch to refuse the
//! command: a preallocated file exported over NVMe loses its preallocation where a host
//! deallocates (`mkfs` does by default), which is why its `discard` is never `true`
//! (docs/exports.md, "Discard").

use std::path::Path;

/// Whether a deallocate on a namespace backed by `path` gives blocks back: a regular file
/// (a hole is punched) or a block device that discards. Blocks: run it off the event loop.
pub fn backing_deallocates(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => true,
        Ok(_) => crate::sys::block::discards(path),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_deallocate_directories_and_missing_paths_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("volume");
        std::fs::write(&f, b"x").unwrap();
        assert!(backing_deallocates(&f));
        assert!(!backing_deallocates(dir.path()));
        assert!(!backing_deallocates(&dir.path().join("gone")));
    }
}
