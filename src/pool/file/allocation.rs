//! What a file pool's volumes really take: `st_blocks` × 512 of each share's volume and
//! each snapshot file, read with `lstat` (nothing a tenant planted in a share's directory
//! is followed or counted as a volume).

use std::path::Path;

use super::FilePool;
use crate::error::{Error, Result};
use crate::pool::Allocation;
use crate::sys::fs;

/// The most objects (share volumes plus snapshot files) one pass stats: a pool holding
/// more gives no figure (`pool.show` leaves `allocated` out) rather than a pass of
/// unbounded cost. docs/protocol.md 8.15.
pub const MAX_OBJECTS: usize = 100_000;

impl FilePool {
    /// One pass over `shares/*/volume` and `snapshots/*`. An object that goes away during
    /// the pass (a delete racing it) counts as nothing; one that cannot be read counts as
    /// nothing with a warning, so one bad object does not cost the whole figure. A pool of
    /// more than [`MAX_OBJECTS`] objects, or a directory that cannot be listed, fails.
    pub(super) fn scan_allocation(&self) -> Result<Allocation> {
        self.scan_allocation_bounded(MAX_OBJECTS)
    }

    fn scan_allocation_bounded(&self, max_objects: usize) -> Result<Allocation> {
        let mut out = Allocation::default();
        let shares = self.ids_in("shares", max_objects)?;
        let snapshots = self.ids_in("snapshots", max_objects - shares.len())?;
        for id in shares {
            let volume = self.share_dir(&id).join("volume");
            if let Some(bytes) = counted(&volume) {
                out.total += bytes;
                out.shares.insert(id, bytes);
            }
        }
        for id in snapshots {
            out.total += counted(&self.snapshot_file(&id)).unwrap_or(0);
        }
        Ok(out)
    }

    /// The allocated bytes of share `id`'s volume; `None` if it is not a regular file.
    pub(super) fn volume_blocks(&self, id: &str) -> Result<Option<u64>> {
        blocks(&self.share_dir(id).join("volume"))
    }

    /// The names in `dir`, at most `max` of them (more is an error).
    fn ids_in(&self, dir: &str, max: usize) -> Result<Vec<String>> {
        let d = self.root.join(dir);
        let listing = |e| Error::io(format!("listing {}", d.display()), e);
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&d).map_err(listing)? {
            if ids.len() == max {
                return Err(Error::Invalid(format!(
                    "pool {}: more volumes and snapshots than the {MAX_OBJECTS} one allocation \
                     pass reads",
                    self.name
                )));
            }
            ids.push(
                entry
                    .map_err(listing)?
                    .file_name()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        Ok(ids)
    }
}

/// `path`'s allocated bytes for a pass: `None` for no regular file there, `Some(0)` with
/// a warning when it cannot be read.
fn counted(path: &Path) -> Option<u64> {
    match fs::allocated_regular(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            log::warn!("allocation: stat {}: {e}; counted as 0", path.display());
            Some(0)
        }
    }
}

fn blocks(path: &Path) -> Result<Option<u64>> {
    fs::allocated_regular(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Pool;
    use std::io::Write;

    #[test]
    fn counts_volumes_and_snapshots_but_not_what_tenants_plant() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["shares/a", "shares/b", "snapshots"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut a = std::fs::File::create(root.join("shares/a/volume")).unwrap();
        a.write_all(&[7u8; 64 << 10]).unwrap();
        a.sync_all().unwrap();
        std::fs::File::create(root.join("snapshots/s"))
            .unwrap()
            .write_all(&[1u8; 8 << 10])
            .unwrap();
        // share b's volume is a planted symbolic link to a's: not a volume, not counted.
        std::os::unix::fs::symlink(root.join("shares/a/volume"), root.join("shares/b/volume"))
            .unwrap();
        let pool = FilePool::new("p", root.to_path_buf());
        let got = pool.allocation().unwrap();
        let a_bytes = fs::allocated(&root.join("shares/a/volume")).unwrap();
        let s_bytes = fs::allocated(&root.join("snapshots/s")).unwrap();
        assert!(a_bytes >= 64 << 10);
        assert_eq!(got.shares.get("a"), Some(&a_bytes));
        assert!(!got.shares.contains_key("b"));
        assert_eq!(got.total, a_bytes + s_bytes);
        assert_eq!(pool.volume_allocated("a").unwrap(), Some(a_bytes));
        assert_eq!(pool.volume_allocated("b").unwrap(), None);
        assert_eq!(pool.volume_allocated("gone").unwrap(), None);
    }

    /// A stat that fails other than "not found" (here ENOTDIR: a share's directory is a
    /// plain file) counts that object as 0; the pass still answers. Past the object bound
    /// it fails instead of reading on.
    #[test]
    fn one_unreadable_object_costs_only_itself_and_the_pass_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["shares/a", "snapshots"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut a = std::fs::File::create(root.join("shares/a/volume")).unwrap();
        a.write_all(&[7u8; 64 << 10]).unwrap();
        a.sync_all().unwrap();
        std::fs::write(root.join("shares/broken"), b"not a directory").unwrap();
        let pool = FilePool::new("p", root.to_path_buf());
        let got = pool.allocation().unwrap();
        let a_bytes = fs::allocated(&root.join("shares/a/volume")).unwrap();
        assert_eq!(got.total, a_bytes);
        assert_eq!(got.shares.get("broken"), Some(&0));
        assert!(pool.scan_allocation_bounded(2).is_ok());
        assert!(pool.scan_allocation_bounded(1).is_err());
    }
}
