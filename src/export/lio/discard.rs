//! Logical block provisioning on LIO backstores: `emulate_tpu` (the UNMAP command) and
//! `emulate_tpws` (WRITE SAME with the UNMAP bit), both off by default.
//!
//! With either on, LIO sets LBPME in READ CAPACITY(16) and answers the Logical Block
//! Provisioning VPD page, so the initiator's `sd` driver turns discard on. A fileio
//! backstore of a regular file carries an UNMAP out as `fallocate(PUNCH_HOLE|KEEP_SIZE)` on
//! the file; a block backstore as a discard of the device (target_core_file.c,
//! target_core_iblock.c). The kernel refuses `emulate_tpu=1` with ENOSYS on a block device
//! that cannot discard (target_core_configfs.c), so a block backstore gets it only when
//! its queue discards (a thin LV does: dm-thin unmaps the blocks). A preallocated volume
//! never gets it: an UNMAP would punch holes in the space its preallocation promised.
//! Both attributes can be set while the LUN is exported (seen in the VM tier).

use std::path::{Path, PathBuf};

use crate::export::ExportSpec;

use super::commands::{backstore_kind, backstore_name};

/// A backstore's unmap attributes: what the export wants, and what configfs holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unmap {
    /// `fileio` or `block`.
    pub kind: &'static str,
    /// Whether the export wants its backstore to unmap ([`wants_unmap`]).
    pub want: bool,
    /// `None`: no backstore; `Some(None)`: mixed or unreadable ([`read_unmap`]).
    pub have: Option<Option<bool>>,
}

impl Unmap {
    /// What the backstore `name` of the volume at `path` (thin or not) wants and holds,
    /// under configfs's `target` directory `root`. Blocks: run it off the event loop.
    pub fn read(path: &Path, root: &Path, name: &str, thin: bool) -> Unmap {
        let kind = backstore_kind(path);
        let can = kind == "block" && crate::sys::block::discards(path);
        Unmap {
            kind,
            want: wants_unmap(thin, kind, can),
            have: backstore_dir(root, kind, name).map(|d| read_unmap(&d)),
        }
    }

    /// A backstore is there and its attributes are not what the export wants.
    pub fn drifted(&self) -> bool {
        self.have.is_some_and(|h| h != Some(self.want))
    }
}

/// The two attributes, in the order targetcli is given them.
pub const ATTRIBUTES: [&str; 2] = ["emulate_tpu", "emulate_tpws"];

/// Whether a backstore of `kind` should unmap: a thin volume (`ExportSpec::thin`), on a
/// file or on a block device whose queue discards (`block_discards`; ignored for a
/// file). Pure.
pub fn wants_unmap(thin: bool, kind: &str, block_discards: bool) -> bool {
    thin && (kind != "block" || block_discards)
}

/// The targetcli argument list that sets both attributes of the export's backstore to `on`.
pub fn unmap_command(spec: &ExportSpec, kind: &str, on: bool) -> Vec<String> {
    let v = u8::from(on);
    vec![
        format!("/backstores/{kind}/{}", backstore_name(spec)),
        "set".into(),
        "attribute".into(),
        format!("{}={v}", ATTRIBUTES[0]),
        format!("{}={v}", ATTRIBUTES[1]),
    ]
}

/// The backstore's directory under configfs's `target` directory `root`
/// (`core/<fileio|iblock>_<n>/<name>`; each backstore has its own HBA), if it exists.
pub fn backstore_dir(root: &Path, kind: &str, name: &str) -> Option<PathBuf> {
    let hba = if kind == "block" {
        "iblock_"
    } else {
        "fileio_"
    };
    std::fs::read_dir(root.join("core"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(hba))
        .map(|e| e.path().join(name))
        .find(|p| p.is_dir())
}

/// Whether both attributes of the backstore in `dir` are on (`Some(true)`), both off
/// (`Some(false)`), or mixed or unreadable (`None`: set them).
pub fn read_unmap(dir: &Path) -> Option<bool> {
    let read = |a: &str| std::fs::read_to_string(dir.join("attrib").join(a)).ok();
    match (read(ATTRIBUTES[0])?.trim(), read(ATTRIBUTES[1])?.trim()) {
        ("1", "1") => Some(true),
        ("0", "0") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::lio::commands::tests::spec;

    #[test]
    fn sparse_volumes_unmap_preallocated_never() {
        assert!(wants_unmap(true, "fileio", false));
        assert!(wants_unmap(true, "block", true));
        // A block device that cannot discard: the kernel would refuse emulate_tpu.
        assert!(!wants_unmap(true, "block", false));
        // Preallocated: never.
        assert!(!wants_unmap(false, "fileio", true));
        assert!(!wants_unmap(false, "block", true));
    }

    #[test]
    fn the_command_sets_both_attributes() {
        assert_eq!(
            unmap_command(&spec(), "fileio", true),
            [
                "/backstores/fileio/shelf-5f1c",
                "set",
                "attribute",
                "emulate_tpu=1",
                "emulate_tpws=1"
            ]
        );
        assert_eq!(unmap_command(&spec(), "block", false)[3], "emulate_tpu=0");
    }

    #[test]
    fn attributes_are_read_from_the_backstore_of_its_kind() {
        let root = tempfile::tempdir().unwrap();
        let attrib = root.path().join("core/iblock_2/shelf-5f1c/attrib");
        std::fs::create_dir_all(&attrib).unwrap();
        std::fs::create_dir_all(root.path().join("core/fileio_0/other")).unwrap();
        assert_eq!(backstore_dir(root.path(), "fileio", "shelf-5f1c"), None);
        let dir = backstore_dir(root.path(), "block", "shelf-5f1c").unwrap();
        assert_eq!(read_unmap(&dir), None, "no attributes: set them");
        // What configfs shows (a value and a newline).
        std::fs::write(attrib.join("emulate_tpu"), "1\n").unwrap();
        std::fs::write(attrib.join("emulate_tpws"), "0\n").unwrap();
        assert_eq!(read_unmap(&dir), None, "mixed: set both");
        std::fs::write(attrib.join("emulate_tpws"), "1\n").unwrap();
        assert_eq!(read_unmap(&dir), Some(true));
        std::fs::write(attrib.join("emulate_tpu"), "0\n").unwrap();
        std::fs::write(attrib.join("emulate_tpws"), "0\n").unwrap();
        assert_eq!(read_unmap(&dir), Some(false));
    }

    #[test]
    fn drift_is_a_backstore_holding_other_attributes() {
        let u = |want, have| Unmap {
            kind: "fileio",
            want,
            have,
        };
        assert!(
            !u(true, None).drifted(),
            "no backstore: missing, not drifted"
        );
        assert!(!u(true, Some(Some(true))).drifted());
        assert!(u(true, Some(Some(false))).drifted());
        assert!(u(false, Some(Some(true))).drifted());
        assert!(u(true, Some(None)).drifted());
    }

    #[test]
    fn a_file_volume_is_read_as_fileio() {
        let root = tempfile::tempdir().unwrap();
        let vol = root.path().join("volume");
        std::fs::write(&vol, b"").unwrap();
        let attrib = root.path().join("core/fileio_0/shelf-5f1c/attrib");
        std::fs::create_dir_all(&attrib).unwrap();
        std::fs::write(attrib.join("emulate_tpu"), "0\n").unwrap();
        std::fs::write(attrib.join("emulate_tpws"), "0\n").unwrap();
        let u = Unmap::read(&vol, root.path(), "shelf-5f1c", true);
        assert_eq!(
            (u.kind, u.want, u.have),
            ("fileio", true, Some(Some(false)))
        );
        let u = Unmap::read(&vol, root.path(), "shelf-5f1c", false);
        assert!(!u.want && !u.drifted());
    }
}
