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
//! Both attributes can be set while the LUN is exported (seen in the VM tier); shelf sets
//! them once the backstore is enabled, before its LUN is linked.

use std::path::Path;

/// The two attributes, in the order they are written.
pub const ATTRIBUTES: [&str; 2] = ["emulate_tpu", "emulate_tpws"];

/// Whether a backstore should unmap: a thin volume (`ExportSpec::thin`), on a file
/// (`is_block` false) or on a block device whose queue discards (`block_discards`;
/// ignored for a file). Pure.
pub fn wants_unmap(thin: bool, is_block: bool, block_discards: bool) -> bool {
    thin && (!is_block || block_discards)
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

    #[test]
    fn sparse_volumes_unmap_preallocated_never() {
        assert!(wants_unmap(true, false, false));
        assert!(wants_unmap(true, true, true));
        // A block device that cannot discard: the kernel would refuse emulate_tpu.
        assert!(!wants_unmap(true, true, false));
        // Preallocated: never.
        assert!(!wants_unmap(false, false, true));
        assert!(!wants_unmap(false, true, true));
    }

    #[test]
    fn attributes_are_read_from_the_backstore() {
        let root = tempfile::tempdir().unwrap();
        let attrib = root.path().join("attrib");
        std::fs::create_dir_all(&attrib).unwrap();
        assert_eq!(read_unmap(root.path()), None, "no attributes: set them");
        // What configfs shows (a value and a newline).
        std::fs::write(attrib.join("emulate_tpu"), "1\n").unwrap();
        std::fs::write(attrib.join("emulate_tpws"), "0\n").unwrap();
        assert_eq!(read_unmap(root.path()), None, "mixed: set both");
        std::fs::write(attrib.join("emulate_tpws"), "1\n").unwrap();
        assert_eq!(read_unmap(root.path()), Some(true));
        std::fs::write(attrib.join("emulate_tpu"), "0\n").unwrap();
        std::fs::write(attrib.join("emulate_tpws"), "0\n").unwrap();
        assert_eq!(read_unmap(root.path()), Some(false));
    }
}
