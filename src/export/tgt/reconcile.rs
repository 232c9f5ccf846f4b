//! The tgt driver's reconcile: compare tgtd's targets and accounts with the tree's
//! exports, and with `repair` make tgtd hold exactly those.

use std::collections::{BTreeMap, BTreeSet};

use super::ipc::TgtRequest;
use super::CHAP_USER_PREFIX;
use super::{desired, parse_show_accounts, parse_show_target, Step, TgtExporter, TgtTarget};
use crate::error::Error;
use crate::export::{action, check_backing_store, ExportSpec, Finding};
use crate::model::Driver;

impl TgtExporter {
    /// [`crate::export::Exporter::reconcile`] for tgt.
    pub(super) async fn reconcile_all(
        &self,
        specs: &[ExportSpec],
        repair: bool,
    ) -> Step<Vec<Finding>> {
        let mut known = self.known.lock().await;
        // tgtd's answer to `show` is bounded by the targets it should hold.
        self.link.expect_targets(specs.len().max(known.len()));
        let out = self.run(TgtRequest::show_targets()).await?;
        let live = parse_show_target(&out);
        let live_by_tid: BTreeMap<u32, &TgtTarget> = live.iter().map(|t| (t.tid, t)).collect();
        let mut findings = Vec::new();
        let mut wanted_users = BTreeSet::new();
        let mut fresh = BTreeMap::new();
        for spec in specs {
            let want = desired(spec)?;
            wanted_users.extend(want.accounts.iter().cloned());
            let have = live_by_tid.get(&want.tid).copied();
            if let Err(Error::Tampered(why)) = check_backing_store(spec).await {
                // Never re-created on a planted object; what tgtd has now (opened
                // before the tampering) is left as it is, not removed as an orphan.
                findings.push(Finding::new(Driver::Tgt, "tampered", &want.iqn, why));
                if let Some(h) = have {
                    fresh.insert(want.tid, h.clone());
                }
                continue;
            }
            if have != Some(&want) {
                let (kind, done) = match have {
                    None => ("missing", "re-created target, LUN, ACL and CHAP"),
                    Some(_) => ("drifted", "brought back in line"),
                };
                if repair {
                    self.converge(have, &want, spec).await?;
                }
                findings.push(Finding::new(
                    Driver::Tgt,
                    kind,
                    &want.iqn,
                    action(repair, done),
                ));
            }
            fresh.insert(want.tid, want);
        }
        for t in &live {
            if !fresh.contains_key(&t.tid) && self.owns(&t.iqn) {
                if repair {
                    self.delete_target(t.tid).await?;
                }
                findings.push(Finding::new(
                    Driver::Tgt,
                    "orphan",
                    &t.iqn,
                    action(repair, "removed: not in the tree"),
                ));
            }
        }
        let accounts = self.run(TgtRequest::show_accounts()).await?;
        for user in parse_show_accounts(&accounts) {
            if user.starts_with(CHAP_USER_PREFIX) && !wanted_users.contains(&user) {
                if repair {
                    self.delete_account(&user).await?;
                }
                findings.push(Finding::new(
                    Driver::Tgt,
                    "orphan",
                    format!("CHAP account {user}"),
                    action(repair, "removed"),
                ));
            }
        }
        if repair {
            *known = fresh;
        }
        Ok(findings)
    }
}
