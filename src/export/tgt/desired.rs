//! What tgtd should hold for one export, and whether a change grants anything (pure).

use super::TgtTarget;
use crate::error::{Error, Result};
use crate::export::{Backing, ExportSpec};
use crate::sys::cmd::Cmd;

/// The desired tgt state of one export.
pub fn desired(spec: &ExportSpec) -> Result<TgtTarget> {
    let e = &spec.export;
    let tid = e
        .tid
        .ok_or_else(|| Error::Internal(format!("iSCSI export {} has no target id", e.id)))?;
    let mut t = TgtTarget {
        tid,
        iqn: e.target.clone(),
        ..Default::default()
    };
    t.luns.insert(1, spec.path.display().to_string());
    if discards(spec) {
        t.thin.insert(1);
    }
    if e.options.chap {
        if let Some(u) = &e.chap_user {
            t.accounts.insert(u.clone());
        }
    }
    t.acl = e.allowed().into_iter().collect();
    Ok(t)
}

/// Whether tgt's LUN of `spec` advertises logical block provisioning, so UNMAP punches
/// holes in the volume: only a thin volume that is a file. tgtd unmaps with
/// `fallocate(PUNCH_HOLE)`; a preallocated volume must keep its blocks, and on a block
/// device (an LVM pool's thin LV: `spec.backing`, from the pool's kind) a punch becomes
/// WRITE ZEROES, which dm-thin does not turn into freed blocks, so it is not advertised
/// there (LIO serves those).
pub fn discards(spec: &ExportSpec) -> bool {
    spec.thin && spec.backing == Backing::File
}

/// `tgtadm --mode logicalunit --op update --params thin_provisioning=<0|1>` of one LUN.
pub fn thin_update(base: Cmd, tid: u32, lun: u32, on: bool) -> Cmd {
    base.args(["--mode", "logicalunit", "--op", "update"])
        .args(["--tid", &tid.to_string(), "--lun", &lun.to_string()])
        .args([
            "--params",
            if on {
                "thin_provisioning=1"
            } else {
                "thin_provisioning=0"
            },
        ])
}

/// Whether going from `have` (what we believe tgtd has) to `want` creates a target or LUN
/// or adds an ACL entry or account, rather than only removing some.
pub fn grants(have: Option<&TgtTarget>, want: &TgtTarget) -> bool {
    match have {
        None => true,
        Some(h) => {
            h.iqn != want.iqn
                || h.luns != want.luns
                || !want.acl.is_subset(&h.acl)
                || !want.accounts.is_subset(&h.accounts)
        }
    }
}

/// The tgtadm flag that binds an ACL entry: initiator names for iSCSI names, addresses
/// otherwise.
pub(super) fn acl_flag(who: &str) -> &'static str {
    if ["iqn.", "eui.", "naa."].iter().any(|p| who.starts_with(p)) {
        "--initiator-name"
    } else {
        "--initiator-address"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_removals_grant_nothing() {
        let mut have = TgtTarget {
            tid: 1,
            iqn: "iqn.x:a".into(),
            ..Default::default()
        };
        have.luns.insert(1, "/p/shares/a/volume".into());
        have.acl.insert("iqn.c:1".into());
        have.accounts.insert("shelf-u".into());
        assert!(grants(None, &have));
        assert!(!grants(Some(&have), &have));
        let mut fewer = have.clone();
        fewer.acl.clear();
        fewer.accounts.clear();
        assert!(!grants(Some(&have), &fewer));
        assert!(grants(Some(&fewer), &have));
        let mut moved = have.clone();
        moved.luns.insert(1, "/elsewhere".into());
        assert!(grants(Some(&have), &moved));
    }

    #[test]
    fn only_thin_files_discard() {
        let spec = |thin, backing| ExportSpec {
            export: crate::model::Export {
                id: "e".into(),
                share: "s".into(),
                share_name: "s".into(),
                protocol: crate::model::Protocol::Iscsi,
                driver: crate::model::Driver::Tgt,
                state: crate::model::ShareState::Available,
                options: Default::default(),
                target: "iqn.x:s".into(),
                tid: Some(3),
                fsid: None,
                chap_user: None,
                attached: vec![],
                created_at: 0,
            },
            path: "/p/shares/s/volume".into(),
            chap_secret: None,
            thin,
            backing,
        };
        let file = spec(true, Backing::File);
        assert!(discards(&file));
        assert_eq!(
            desired(&file).unwrap().thin.iter().collect::<Vec<_>>(),
            [&1]
        );
        let thick = spec(false, Backing::File);
        assert!(!discards(&thick) && desired(&thick).unwrap().thin.is_empty());
        // The pool's word, not the path's: a block device is one wherever its path is.
        assert!(!discards(&spec(true, Backing::BlockDevice)));
    }

    #[test]
    fn thin_provisioning_is_an_update_of_the_lun() {
        let argv = |on| thin_update(Cmd::new("tgtadm"), 7, 1, on).argv().to_vec();
        assert_eq!(
            argv(true),
            [
                "--mode",
                "logicalunit",
                "--op",
                "update",
                "--tid",
                "7",
                "--lun",
                "1",
                "--params",
                "thin_provisioning=1"
            ]
        );
        assert_eq!(argv(false).last().unwrap(), "thin_provisioning=0");
    }

    #[test]
    fn acl_flags() {
        assert_eq!(
            acl_flag("iqn.1993-08.org.debian:01:abc"),
            "--initiator-name"
        );
        assert_eq!(acl_flag("192.0.2.1"), "--initiator-address");
    }
}
