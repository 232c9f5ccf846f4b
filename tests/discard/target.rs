//! What the tests read off a target and a volume: blocks allocated (`stat -c %b`), the
//! LUNs tgtd says are thin provisioned, and a bare tgtd LUN set up by hand as the reference.

use std::collections::BTreeSet;
use std::path::Path;

use super::common::{rig::Tgtd, sh, Login};

/// 512-byte blocks allocated to `path`, as `stat -c %b` says.
pub fn blocks(path: &Path) -> u64 {
    sh(&["stat", "-c", "%b", path.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap()
}

/// The LUNs of target `iqn` that tgtd reports as `Thin-provisioning: Yes`.
pub fn thin_luns(tgtd: &Tgtd, iqn: &str) -> BTreeSet<u32> {
    shelf::export::tgt::parse_show_target(&tgtd.show())
        .into_iter()
        .find(|t| t.iqn == iqn)
        .unwrap_or_else(|| panic!("tgtd has no target {iqn}"))
        .thin
}

/// Send one raw SCSI UNMAP of `blocks` logical blocks at `lba` to LUN 1 through
/// libiscsi's library (tests/discard/unmap.py), advertised or not; its
/// `status=<SCSI status> error=<libiscsi's message>` line.
pub fn raw_unmap(login: &Login, lba: u64, blocks: u64) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/discard/unmap.py");
    let (lba, blocks) = (lba.to_string(), blocks.to_string());
    let (ok, out, err) = login.run(&[
        "python3",
        script,
        &login.portal,
        &login.iqn,
        &login.user,
        &login.initiator,
        &lba,
        &blocks,
    ]);
    assert!(ok, "unmap.py: {out}{err}");
    out
}

/// A target made by hand on `tgtd`: LUN 1 on a new sparse file `file` of `size` bytes
/// with `thin_provisioning=1`, open to `initiator`. Its libiscsi URL.
pub fn bare_thin_lun(tgtd: &Tgtd, file: &Path, size: u64, initiator: &str) -> String {
    const IQN: &str = "iqn.2026-12.org.example.bare:thin";
    std::fs::File::create(file).unwrap().set_len(size).unwrap();
    let f = file.to_str().unwrap();
    for args in [
        &[
            "--mode",
            "target",
            "--op",
            "new",
            "--tid",
            "1",
            "--targetname",
            IQN,
        ][..],
        &[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            "1",
            "--lun",
            "1",
            "--backing-store",
            f,
        ],
        &[
            "--mode",
            "logicalunit",
            "--op",
            "update",
            "--tid",
            "1",
            "--lun",
            "1",
            "--params",
            "thin_provisioning=1",
        ],
        &[
            "--mode",
            "target",
            "--op",
            "bind",
            "--tid",
            "1",
            "--initiator-name",
            initiator,
        ],
    ] {
        tgtd.tgtadm(args)
            .unwrap_or_else(|e| panic!("tgtadm {args:?}: {e}"));
    }
    assert_eq!(thin_luns(tgtd, IQN), BTreeSet::from([1]));
    format!("iscsi://127.0.0.1:{}/{IQN}/1", tgtd.port)
}

/// The mount options (per mount and the filesystem's) of what is mounted at `mp`.
pub fn mount_options(mp: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        if Path::new(fields.get(4)?) != mp {
            return None;
        }
        let supers = right.split(' ').nth(2).unwrap_or("");
        Some(
            fields[5]
                .split(',')
                .chain(supers.split(','))
                .map(str::to_string)
                .collect(),
        )
    })
}
