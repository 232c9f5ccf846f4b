//! The programs shelfd may run, resolved once at start (STYLE.md rule 13): [`PROGRAMS`]
//! lists each with what needs it, [`Programs::at_start`] looks them all up in the runner's
//! fixed directories ([`SEARCH_DIRS`], never `$PATH`) and logs one line of what was found
//! and what is missing, and [`find_program`] answers from that table afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::cmd::SEARCH_DIRS;

/// Every program shelfd may run, and what needs it (for the start-up report).
pub const PROGRAMS: &[(&str, &str)] = &[
    ("tgtadm", "export driver tgt"),
    ("exportfs", "export driver nfs-kernel"),
    ("ganesha.nfsd", "export driver ganesha"),
    ("lvs", "lvm pools"),
    ("lvcreate", "lvm pools"),
    ("lvextend", "lvm pools"),
    ("lvremove", "lvm pools"),
    ("lvchange", "lvm pools"),
    ("lvrename", "lvm pools (share.revert)"),
    ("vgchange", "lvm pools"),
    ("dmsetup", "lvm pools (snapshot.send)"),
    ("thin_delta", "lvm pools (snapshot.send)"),
    ("thin_dump", "lvm pools (snapshot.send)"),
    ("qemu-img", "image import"),
    ("mkfs.xfs", "formatted shares (xfs)"),
    ("mkfs.ext4", "formatted shares (ext4)"),
    ("xfs_growfs", "formatted shares (xfs)"),
    ("resize2fs", "formatted shares (ext4)"),
    ("mount", "formatted shares"),
    ("umount", "formatted shares"),
    ("fsfreeze", "formatted shares"),
    ("losetup", "formatted shares"),
];

/// The first executable regular file called `name` in `dirs`.
fn search<D: AsRef<Path>>(dirs: &[D], name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().map(|d| d.as_ref().join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Where each program of [`PROGRAMS`] was found (or that it was not), resolved once.
#[derive(Debug, Clone)]
pub struct Programs {
    paths: BTreeMap<&'static str, Option<PathBuf>>,
}

/// The table resolved at start, once [`Programs::at_start`] has run.
static AT_START: OnceLock<Programs> = OnceLock::new();

impl Programs {
    /// Look every program of [`PROGRAMS`] up in `dirs`, in order.
    pub fn resolve_in<D: AsRef<Path>>(dirs: &[D]) -> Programs {
        Programs {
            paths: PROGRAMS
                .iter()
                .map(|(name, _)| (*name, search(dirs, name)))
                .collect(),
        }
    }

    /// Resolve every program in [`SEARCH_DIRS`] once for this process and log one line
    /// naming what was found and what is missing with what needs it (a warning when
    /// something is missing). Later calls return the same table; from then on
    /// [`find_program`] and the runner answer from it. A missing program does not stop
    /// the daemon: what needs it reports itself unusable.
    pub fn at_start() -> &'static Programs {
        let mut fresh = false;
        let table = AT_START.get_or_init(|| {
            fresh = true;
            Programs::resolve_in(SEARCH_DIRS)
        });
        if fresh {
            if table.missing().is_empty() {
                log::info!("{}", table.summary());
            } else {
                log::warn!("{}", table.summary());
            }
        }
        table
    }

    /// The path of a listed program: `None` when `name` is not in [`PROGRAMS`],
    /// `Some(None)` when it is but was not found.
    pub fn get(&self, name: &str) -> Option<Option<&Path>> {
        self.paths.get(name).map(|p| p.as_deref())
    }

    /// The missing programs, each with what needs it.
    pub fn missing(&self) -> Vec<(&'static str, &'static str)> {
        PROGRAMS
            .iter()
            .filter(|(name, _)| matches!(self.get(name), Some(None)))
            .copied()
            .collect()
    }

    /// The one start-up line: `programs: found a (/usr/bin/a), ...; missing: b (for c), ...`.
    pub fn summary(&self) -> String {
        let found: Vec<String> = PROGRAMS
            .iter()
            .filter_map(|(name, _)| match self.get(name) {
                Some(Some(p)) => Some(format!("{name} ({})", p.display())),
                _ => None,
            })
            .collect();
        let missing: Vec<String> = self
            .missing()
            .iter()
            .map(|(name, what)| format!("{name} (for {what})"))
            .collect();
        format!(
            "programs: found {}; missing: {}",
            if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            },
            if missing.is_empty() {
                "none".into()
            } else {
                missing.join(", ")
            }
        )
    }
}

/// Find a program by name: from the table resolved at start for a program of
/// [`PROGRAMS`], else (before start-up resolution, in a client such as shelfctl, or for a
/// program not listed) by looking in [`SEARCH_DIRS`] now.
pub fn find_program(name: &str) -> Option<PathBuf> {
    match AT_START.get().and_then(|t| t.get(name)) {
        Some(p) => p.map(Path::to_path_buf),
        None => search(SEARCH_DIRS, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolver against a temp dir of fake executables (empty files with modes set
    /// here; nothing is run): found in the first dir that has it, a non-executable file
    /// is not a program, and the missing ones are named with what needs them.
    #[test]
    fn resolver_finds_fake_executables_and_names_the_missing() {
        use std::os::unix::fs::PermissionsExt;
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let make = |dir: &Path, name: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, b"").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        make(second.path(), "tgtadm", 0o755);
        make(first.path(), "lvs", 0o755);
        make(second.path(), "lvs", 0o755);
        make(first.path(), "qemu-img", 0o644);
        let t = Programs::resolve_in(&[first.path(), second.path()]);
        assert_eq!(
            t.get("tgtadm"),
            Some(Some(second.path().join("tgtadm").as_path()))
        );
        assert_eq!(t.get("lvs"), Some(Some(first.path().join("lvs").as_path())));
        assert_eq!(t.get("qemu-img"), Some(None), "not executable");
        assert_eq!(t.get("cat"), None, "not a listed program");
        let missing = t.missing();
        assert_eq!(missing.len(), PROGRAMS.len() - 2);
        assert!(missing.contains(&("qemu-img", "image import")));
        let line = t.summary();
        assert!(
            line.contains(&format!(
                "tgtadm ({})",
                second.path().join("tgtadm").display()
            )),
            "{line}"
        );
        assert!(line.contains("qemu-img (for image import)"), "{line}");
        assert!(
            line.contains("exportfs (for export driver nfs-kernel)"),
            "{line}"
        );
    }
}
