//! Whether an nvmet namespace deallocates. nvmet's controllers always advertise Dataset
//! Management (Identify Controller's ONCS), so every host may send a deallocate; what it
//! does depends on the namespace's backing (drivers/nvme/target/io-cmd-file.c,
//! io-cmd-bdev.c): a file's range is punched out (`fallocate(PUNCH_HOLE|KEEP_SIZE)`), a
//! block device's is discarded, and on a device that cannot discard the command succeeds
//! doing nothing. So a thin LV's namespace gives the blocks back to the thin pool, a
//! sparse file's gives them back to the filesystem. nvmet has no switch to refuse the
//! command: a preallocated file exported over NVMe would lose its preallocation where a
//! host deallocates (`mkfs` does by default; measured in the VM tier: 8 MiB of a 32 MiB
//! preallocated file), so such an export is refused ([`check_preallocated`];
//! docs/exports.md, "Discard"). A preallocated block device would be served: a discard
//! leaves a linear LV's extents allocated to it (shelf's LVM pools are thin only, so none
//! exists today).

use std::fs::FileType;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Whether a deallocate on a namespace backed by `path` gives blocks back: a regular file
/// (a hole is punched) or a block device that discards. Blocks: run it off the event loop.
pub fn backing_deallocates(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => true,
        Ok(_) => crate::sys::block::discards(path),
        Err(_) => false,
    }
}

/// Whether nvmet may serve the preallocated volume of share `share` at `path`, whose file
/// type (not following a link) is `kind`: only a block device keeps its allocation through
/// a deallocate. `unsupported` for anything else (a file, or whatever stands there), which
/// names why; `not_found` when the volume is gone. Pure: the caller stats the path.
pub fn check_preallocated(share: &str, path: &Path, kind: std::io::Result<FileType>) -> Result<()> {
    match kind {
        Ok(k) if k.is_block_device() => Ok(()),
        Ok(_) => Err(Error::Unsupported(format!(
            "share {share} is preallocated (sparse: false) and its volume {} is not a block \
             device: nvmet deallocates on every file-backed namespace (any host may; it has \
             no switch to refuse), so the preallocation cannot be kept; export it over iSCSI, \
             or use a thin (sparse) share for NVMe/TCP",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(format!(
            "share {share}: its volume {} is gone",
            path.display()
        ))),
        Err(e) => Err(Error::io(format!("checking {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &Path) -> std::io::Result<FileType> {
        std::fs::symlink_metadata(p).map(|m| m.file_type())
    }

    #[test]
    fn a_preallocated_file_is_refused_a_block_device_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("volume");
        std::fs::write(&f, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        for p in [f.as_path(), dir.path(), link.as_path()] {
            match check_preallocated("v", p, kind(p)) {
                Err(Error::Unsupported(m)) => {
                    assert!(
                        m.contains("nvmet deallocates") && m.contains("share v"),
                        "{m}"
                    )
                }
                other => panic!("{}: {other:?}", p.display()),
            }
        }
        let gone = dir.path().join("gone");
        assert!(matches!(
            check_preallocated("v", &gone, kind(&gone)),
            Err(Error::NotFound(_))
        ));
        let block = std::fs::read_dir("/dev")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| kind(p).is_ok_and(|k| k.is_block_device()));
        if let Some(b) = block {
            assert!(
                check_preallocated("v", &b, kind(&b)).is_ok(),
                "{}",
                b.display()
            );
        }
    }

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
