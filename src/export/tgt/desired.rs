//! What tgtd should hold for one export, and whether a change grants anything (pure).

use super::TgtTarget;
use crate::error::{Error, Result};
use crate::export::{Backing, ExportSpec};

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
}
