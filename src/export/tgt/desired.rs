//! What tgtd should hold for one export, and whether a change grants anything (pure).

use super::TgtTarget;
use crate::error::{Error, Result};
use crate::export::ExportSpec;

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
    if e.options.chap {
        if let Some(u) = &e.chap_user {
            t.accounts.insert(u.clone());
        }
    }
    t.acl = e.allowed().into_iter().collect();
    Ok(t)
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
}
