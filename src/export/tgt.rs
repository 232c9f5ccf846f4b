//! iSCSI through tgt: one target per share, LUN 1 backed by the volume, initiator-name
//! ACLs and a per-target CHAP account, all on tgtd's management socket for a configurable
//! control port ([`transport`]; `tgtadm` only as the fallback).
//!
//! tgtd keeps its configuration only in memory, so after a tgtd restart everything is
//! replayed by [`Exporter::reconcile`]. Ordinary operations never read tgtd's full state
//! (`show` is O(targets)): the driver remembers what it configured and applies only the
//! difference, falling back to a full re-create when tgtd says a target is gone. Calls to
//! tgtd are serialised, as its management side is single-threaded.

mod choice;
mod desired;
pub mod ipc;
mod parse;
mod reconcile;
mod reply;
pub mod transport;

use std::collections::BTreeMap;

use async_lock::Mutex;

use super::{check_backing_store, BoxFut, ExportSpec, Exporter, Finding};
use crate::config::TgtTransport;
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::cmd::Runner;

pub use desired::{desired, discards, grants};
use ipc::{TgtCode, TgtRequest};
pub use parse::{parse_show_accounts, parse_show_target, TgtTarget};
use transport::{TgtFailure, TgtLink};

pub use super::iscsi::CHAP_USER_PREFIX;

/// A step's outcome inside the driver: tgtd's refusals keep their codes until the
/// driver's answer is made.
type Step<T = ()> = std::result::Result<T, TgtFailure>;

/// The tgt driver.
#[derive(Debug)]
pub struct TgtExporter {
    link: TgtLink,
    iqn_prefix: String,
    /// What we configured, by tid; rebuilt by reconcile. The lock also serialises the
    /// requests to tgtd.
    known: Mutex<BTreeMap<u32, TgtTarget>>,
}

impl TgtExporter {
    /// A driver for the tgtd on `control_port`, owning targets named `<iqn_prefix>:*`,
    /// reaching it as `transport` allows.
    pub fn new(
        runner: Runner,
        control_port: u32,
        iqn_prefix: &str,
        transport: TgtTransport,
    ) -> Self {
        TgtExporter {
            link: TgtLink::new(runner, control_port, transport),
            iqn_prefix: iqn_prefix.to_string(),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    async fn run(&self, req: TgtRequest) -> Step<String> {
        self.link.call(&req).await
    }

    /// Run a request whose "already so" refusals (`already`) are success.
    async fn run_tolerant(&self, req: TgtRequest, already: &[TgtCode]) -> Step {
        match self.link.call(&req).await {
            Ok(_) => Ok(()),
            Err(f) if f.code().is_some_and(|c| already.contains(&c)) => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// Create target `t` from nothing. `spec` is its export: its backing store is checked
    /// again once tgtd has opened it, narrowing the window in which a swap of the path
    /// between [`check_backing_store`] and tgtd's own open goes unseen (docs/security.md §2).
    async fn create_target(&self, t: &TgtTarget, secret: Option<&str>, spec: &ExportSpec) -> Step {
        self.run(TgtRequest::new_target(t.tid, &t.iqn)).await?;
        for (lun, path) in &t.luns {
            self.run(TgtRequest::new_lun(t.tid, u64::from(*lun), path))
                .await?;
            check_backing_store(spec).await?;
            if t.thin.contains(lun) {
                self.set_thin(t.tid, *lun, true).await?;
            }
        }
        for user in &t.accounts {
            self.bind_account(t.tid, user, secret).await?;
        }
        for who in &t.acl {
            self.bind(t.tid, who).await?;
        }
        Ok(())
    }

    /// Switch logical block provisioning of one LUN on or off. tgtd takes
    /// `thin_provisioning` only as an `update` of an existing LUN (its `logicalunit new`
    /// refuses `--params`); a new LUN starts fully provisioned, so off needs no call.
    async fn set_thin(&self, tid: u32, lun: u32, on: bool) -> Step {
        self.run(TgtRequest::thin_provisioning(tid, u64::from(lun), on))
            .await
            .map(|_| ())
    }

    async fn bind_account(&self, tid: u32, user: &str, secret: Option<&str>) -> Step {
        let secret = secret.ok_or_else(|| Error::Internal(format!("no CHAP secret for {user}")))?;
        self.run_tolerant(
            TgtRequest::new_account(user, secret),
            &[TgtCode::USER_EXIST],
        )
        .await?;
        self.run(TgtRequest::account_binding(true, tid, user))
            .await
            .map(|_| ())
    }

    async fn bind(&self, tid: u32, who: &str) -> Step {
        self.run_tolerant(TgtRequest::acl(true, tid, who), &[TgtCode::ACL_EXIST])
            .await
    }

    async fn unbind(&self, tid: u32, who: &str) -> Step {
        self.run_tolerant(TgtRequest::acl(false, tid, who), &[TgtCode::ACL_NOEXIST])
            .await
    }

    async fn delete_target(&self, tid: u32) -> Step {
        self.run_tolerant(TgtRequest::delete_target(tid), &[TgtCode::NO_TARGET])
            .await
    }

    async fn delete_account(&self, user: &str) -> Step {
        self.run_tolerant(TgtRequest::delete_account(user), &[TgtCode::NO_USER])
            .await
    }

    /// Bring target `want` in line, given what we believe is there.
    async fn converge(
        &self,
        have: Option<&TgtTarget>,
        want: &TgtTarget,
        spec: &ExportSpec,
    ) -> Step {
        let secret = spec.chap_secret.as_deref();
        let Some(have) = have else {
            return self.create_target(want, secret, spec).await;
        };
        if have.iqn != want.iqn || have.luns != want.luns {
            self.delete_target(want.tid).await?;
            return self.create_target(want, secret, spec).await;
        }
        for lun in want.luns.keys() {
            let on = want.thin.contains(lun);
            if have.thin.contains(lun) != on {
                self.set_thin(want.tid, *lun, on).await?;
            }
        }
        for user in want.accounts.difference(&have.accounts) {
            self.bind_account(want.tid, user, secret).await?;
        }
        for user in have.accounts.difference(&want.accounts) {
            self.run_tolerant(
                TgtRequest::account_binding(false, want.tid, user),
                &[TgtCode::NO_TARGET, TgtCode::NO_USER, TgtCode::NO_BINDING],
            )
            .await?;
        }
        for who in want.acl.difference(&have.acl) {
            self.bind(want.tid, who).await?;
        }
        for who in have.acl.difference(&want.acl) {
            self.unbind(want.tid, who).await?;
        }
        Ok(())
    }

    /// What tgtd has at `tid` now (one `show`; only to recover from a stale memory).
    async fn live_target(&self, tid: u32) -> Step<Option<TgtTarget>> {
        let out = self.run(TgtRequest::show_targets()).await?;
        Ok(parse_show_target(&out).into_iter().find(|t| t.tid == tid))
    }

    /// Converge from what we believe tgtd has, recovering once from a stale memory.
    async fn apply_known(
        &self,
        have: Option<&TgtTarget>,
        want: &TgtTarget,
        spec: &ExportSpec,
    ) -> Step {
        let secret = spec.chap_secret.as_deref();
        match self.converge(have, want, spec).await {
            // Our memory was stale (tgtd restarted): build the target from nothing.
            Err(f) if have.is_some() && f.code() == Some(TgtCode::NO_TARGET) => {
                self.create_target(want, secret, spec).await
            }
            // Stale the other way: an earlier request failed (it timed out, so we forgot
            // the target) but tgtd still has it, or carried the request out late. Start
            // from what tgtd has, if it is this export's target.
            Err(f) if have.is_none() && f.code() == Some(TgtCode::TARGET_EXIST) => {
                match self.live_target(want.tid).await? {
                    Some(live) if live.iqn == want.iqn => {
                        self.converge(Some(&live), want, spec).await
                    }
                    _ => Err(f),
                }
            }
            other => other,
        }
    }

    fn owns(&self, iqn: &str) -> bool {
        iqn.strip_prefix(&self.iqn_prefix)
            .is_some_and(|rest| rest.starts_with(':'))
    }
}

impl Exporter for TgtExporter {
    fn driver(&self) -> Driver {
        Driver::Tgt
    }

    fn wants_tid(&self) -> bool {
        true
    }

    fn transport(&self) -> Option<&'static str> {
        self.link.chosen().map(|c| c.as_str())
    }

    fn discards(&self, spec: &ExportSpec) -> bool {
        discards(spec)
    }

    fn probe(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            let _serial = self.known.lock().await;
            self.link.probe().await.map(|_| ()).map_err(Error::from)
        })
    }

    fn apply<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let want = desired(spec)?;
            let mut known = self.known.lock().await;
            let have = known.get(&want.tid).cloned();
            // Every apply that grants anything (a new target or LUN, an ACL entry, an
            // account) first checks the backing store: access is never given to a planted
            // object. One that only takes access away is never held up by one.
            if grants(have.as_ref(), &want) {
                check_backing_store(spec).await?;
            }
            // A `show` on the way (a stale memory) is bounded by the targets we know.
            self.link.expect_targets(known.len() + 1);
            let result = self.apply_known(have.as_ref(), &want, spec).await;
            match &result {
                Ok(()) => known.insert(want.tid, want),
                Err(_) => known.remove(&want.tid),
            };
            result.map_err(Error::from)
        })
    }

    fn remove<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let mut known = self.known.lock().await;
            if let Some(tid) = spec.export.tid {
                self.delete_target(tid).await?;
                known.remove(&tid);
            }
            if let Some(user) = &spec.export.chap_user {
                self.delete_account(user).await?;
            }
            Ok(())
        })
    }

    fn refresh_size<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            // tgt reads a backing file's size when the LUN is opened: re-open LUN 1.
            // Sessions stay logged in; initiators see the new capacity on their next
            // READ CAPACITY.
            let want = desired(spec)?;
            check_backing_store(spec).await?;
            let _serial = self.known.lock().await;
            let path = spec.path.display().to_string();
            self.run(TgtRequest::delete_lun(want.tid, 1)).await?;
            self.run(TgtRequest::new_lun(want.tid, 1, &path)).await?;
            check_backing_store(spec).await?;
            // The re-created LUN starts fully provisioned: give it back its thin flag.
            if want.thin.contains(&1) {
                self.set_thin(want.tid, 1, true).await?;
            }
            Ok(())
        })
    }

    fn reconcile<'a>(
        &'a self,
        specs: &'a [ExportSpec],
        repair: bool,
    ) -> BoxFut<'a, Result<Vec<Finding>>> {
        Box::pin(async move { self.reconcile_all(specs, repair).await.map_err(Error::from) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_by_prefix_and_colon() {
        let x = TgtExporter::new(
            Runner::new(std::time::Duration::from_secs(1)),
            1,
            "iqn.2026-11.org.example.shelf",
            TgtTransport::Auto,
        );
        assert!(x.owns("iqn.2026-11.org.example.shelf:vol1"));
        assert!(!x.owns("iqn.2026-11.org.example.shelfish:vol1"));
        assert!(!x.owns("iqn.2020-01.com.other:foreign"));
    }
}
