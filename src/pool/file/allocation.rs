//! What a file pool's volumes really take: `st_blocks` × 512 of each share's volume and
//! each snapshot file, read with `lstat` (nothing a tenant planted in a share's directory
//! is followed or counted as a volume).

use std::path::Path;

use super::FilePool;
use crate::error::{Error, Result};
use crate::pool::Allocation;
use crate::sys::fs;

impl FilePool {
    /// One pass over `shares/*/volume` and `snapshots/*`. An object that goes away during
    /// the pass (a delete racing it) counts as nothing.
    pub(super) fn scan_allocation(&self) -> Result<Allocation> {
        let mut out = Allocation::default();
        for id in self.ids_in("shares")? {
            if let Some(bytes) = self.volume_blocks(&id)? {
                out.total += bytes;
                out.shares.insert(id, bytes);
            }
        }
        for id in self.ids_in("snapshots")? {
            let path = self.snapshot_file(&id);
            out.total += blocks(&path)?.unwrap_or(0);
        }
        Ok(out)
    }

    /// The allocated bytes of share `id`'s volume; `None` if it is not a regular file.
    pub(super) fn volume_blocks(&self, id: &str) -> Result<Option<u64>> {
        blocks(&self.share_dir(id).join("volume"))
    }

    fn ids_in(&self, dir: &str) -> Result<Vec<String>> {
        let d = self.root.join(dir);
        let listing = |e| Error::io(format!("listing {}", d.display()), e);
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&d).map_err(listing)? {
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
}
