//! iSCSI through tgt: one target per share, LUN 1 backed by the volume, initiator-name
//! ACLs and a per-target CHAP account, all with `tgtadm` on a configurable control port.
//!
//! tgtd keeps its configuration only in memory, so after a tgtd restart everything is
//! replayed by [`Exporter::reconcile`]. Ordinary operations never read tgtd's full state
//! (`show` is O(targets)): the driver remembers what it configured and applies only the
//! difference, falling back to a full re-create when tgtd says a target is gone. Calls to
//! tgtd are serialised, as its management side is single-threaded.

mod desired;
mod parse;

use std::collections::{BTreeMap, BTreeSet};

use async_lock::Mutex;

use super::{action, check_backing_store, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::cmd::{find_program, Cmd, CmdError, Runner};

use desired::acl_flag;
pub use desired::{desired, discards, grants, thin_update};
pub use parse::{parse_show_accounts, parse_show_target, TgtTarget};

pub use super::iscsi::CHAP_USER_PREFIX;

/// The tgt driver.
#[derive(Debug)]
pub struct TgtExporter {
    runner: Runner,
    control_port: u32,
    iqn_prefix: String,
    /// What we configured, by tid; rebuilt by reconcile. The lock also serialises tgtadm.
    known: Mutex<BTreeMap<u32, TgtTarget>>,
}

impl TgtExporter {
    /// A driver for the tgtd on `control_port`, owning targets named `<iqn_prefix>:*`.
    pub fn new(runner: Runner, control_port: u32, iqn_prefix: &str) -> Self {
        TgtExporter {
            runner,
            control_port,
            iqn_prefix: iqn_prefix.to_string(),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    fn base(&self) -> Cmd {
        Cmd::new("tgtadm").args(["--lld", "iscsi", "-C", &self.control_port.to_string()])
    }

    async fn run(&self, cmd: Cmd) -> Result<String> {
        match self.runner.run(&cmd).await {
            Ok(out) => Ok(out.stdout_text()),
            Err(e) => Err(self.map_err(e)),
        }
    }

    fn map_err(&self, e: CmdError) -> Error {
        if e.exit_code() == Some(107) || e.stderr().contains("Transport endpoint is not connected")
        {
            Error::Busy(format!(
                "tgtd is not running (no answer on control port {}): {e}",
                self.control_port
            ))
        } else {
            Error::Command(e)
        }
    }

    /// Run a tgtadm command whose "already so" answer is success.
    async fn run_tolerant(&self, cmd: Cmd, already: &str) -> Result<()> {
        match self.runner.run(&cmd).await {
            Ok(_) => Ok(()),
            Err(e) if e.stderr().contains(already) => Ok(()),
            Err(e) => Err(self.map_err(e)),
        }
    }

    /// Create target `t` from nothing. `spec` is its export: its backing store is checked
    /// again once tgtd has opened it, narrowing the window in which a swap of the path
    /// between [`check_backing_store`] and tgtd's own open goes unseen (docs/security.md §2).
    async fn create_target(
        &self,
        t: &TgtTarget,
        secret: Option<&str>,
        spec: &ExportSpec,
    ) -> Result<()> {
        let tid = t.tid.to_string();
        self.run(
            self.base()
                .args(["--mode", "target", "--op", "new", "--tid", &tid])
                .args(["--targetname", &t.iqn]),
        )
        .await?;
        for (lun, path) in &t.luns {
            self.run(
                self.base()
                    .args(["--mode", "logicalunit", "--op", "new", "--tid", &tid])
                    .args(["--lun", &lun.to_string(), "--backing-store", path]),
            )
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
    async fn set_thin(&self, tid: u32, lun: u32, on: bool) -> Result<()> {
        self.run(thin_update(self.base(), tid, lun, on))
            .await
            .map(|_| ())
    }

    async fn bind_account(&self, tid: u32, user: &str, secret: Option<&str>) -> Result<()> {
        let secret = secret.ok_or_else(|| Error::Internal(format!("no CHAP secret for {user}")))?;
        self.run_tolerant(
            self.base()
                .args([
                    "--mode",
                    "account",
                    "--op",
                    "new",
                    "--user",
                    user,
                    "--password",
                ])
                .secret_arg(secret),
            "already exists",
        )
        .await?;
        let tid = tid.to_string();
        self.run(self.base().args([
            "--mode", "account", "--op", "bind", "--tid", &tid, "--user", user,
        ]))
        .await
        .map(|_| ())
    }

    async fn bind(&self, tid: u32, who: &str) -> Result<()> {
        let tid = tid.to_string();
        self.run_tolerant(
            self.base().args([
                "--mode",
                "target",
                "--op",
                "bind",
                "--tid",
                &tid,
                acl_flag(who),
                who,
            ]),
            "already exists",
        )
        .await
    }

    async fn unbind(&self, tid: u32, who: &str) -> Result<()> {
        let tid = tid.to_string();
        self.run_tolerant(
            self.base().args([
                "--mode",
                "target",
                "--op",
                "unbind",
                "--tid",
                &tid,
                acl_flag(who),
                who,
            ]),
            "does not exist",
        )
        .await
    }

    async fn delete_target(&self, tid: u32) -> Result<()> {
        let tid = tid.to_string();
        self.run_tolerant(
            self.base().args([
                "--mode", "target", "--op", "delete", "--force", "--tid", &tid,
            ]),
            "can't find the target",
        )
        .await
    }

    async fn delete_account(&self, user: &str) -> Result<()> {
        self.run_tolerant(
            self.base()
                .args(["--mode", "account", "--op", "delete", "--user", user]),
            "can't find the account",
        )
        .await
    }

    /// Bring target `want` in line, given what we believe is there.
    async fn converge(
        &self,
        have: Option<&TgtTarget>,
        want: &TgtTarget,
        spec: &ExportSpec,
    ) -> Result<()> {
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
            let tid = want.tid.to_string();
            self.run_tolerant(
                self.base().args([
                    "--mode", "account", "--op", "unbind", "--tid", &tid, "--user", user,
                ]),
                "can't find",
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
    async fn live_target(&self, tid: u32) -> Result<Option<TgtTarget>> {
        let out = self
            .run(self.base().args(["--mode", "target", "--op", "show"]))
            .await?;
        Ok(parse_show_target(&out).into_iter().find(|t| t.tid == tid))
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

    fn discards(&self, spec: &ExportSpec) -> bool {
        discards(spec)
    }

    fn probe(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            if find_program("tgtadm").is_none() {
                return Err(Error::Unsupported(
                    "tgtadm is not installed (package tgt)".into(),
                ));
            }
            let _serial = self.known.lock().await;
            self.run(self.base().args(["--mode", "system", "--op", "show"]))
                .await
                .map(|_| ())
        })
    }

    fn apply<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let want = desired(spec)?;
            let secret = spec.chap_secret.as_deref();
            let mut known = self.known.lock().await;
            let have = known.get(&want.tid).cloned();
            // Every apply that grants anything (a new target or LUN, an ACL entry, an
            // account) first checks the backing store: access is never given to a planted
            // object. One that only takes access away is never held up by one.
            if grants(have.as_ref(), &want) {
                check_backing_store(spec).await?;
            }
            let result = match self.converge(have.as_ref(), &want, spec).await {
                // Our memory was stale (tgtd restarted): build the target from nothing.
                Err(Error::Command(e))
                    if have.is_some() && e.stderr().contains("can't find the target") =>
                {
                    self.create_target(&want, secret, spec).await
                }
                // Stale the other way: an earlier request failed (its tgtadm timed out, so we
                // forgot the target) but tgtd still has it, or carried the killed command out
                // late. Start from what tgtd has, if it is this export's target.
                Err(Error::Command(e))
                    if have.is_none() && e.stderr().contains("this target already exists") =>
                {
                    match self.live_target(want.tid).await? {
                        Some(live) if live.iqn == want.iqn => {
                            self.converge(Some(&live), &want, spec).await
                        }
                        _ => Err(Error::Command(e)),
                    }
                }
                other => other,
            };
            match &result {
                Ok(()) => known.insert(want.tid, want),
                Err(_) => known.remove(&want.tid),
            };
            result
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
            let tid = want.tid.to_string();
            let path = spec.path.display().to_string();
            self.run(
                self.base()
                    .args(["--mode", "logicalunit", "--op", "delete", "--tid", &tid])
                    .args(["--lun", "1"]),
            )
            .await?;
            self.run(
                self.base()
                    .args(["--mode", "logicalunit", "--op", "new", "--tid", &tid])
                    .args(["--lun", "1", "--backing-store", &path]),
            )
            .await?;
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
        Box::pin(async move {
            let mut known = self.known.lock().await;
            let out = self
                .run(self.base().args(["--mode", "target", "--op", "show"]))
                .await?;
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
            let accounts = self
                .run(self.base().args(["--mode", "account", "--op", "show"]))
                .await?;
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
        })
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
        );
        assert!(x.owns("iqn.2026-11.org.example.shelf:vol1"));
        assert!(!x.owns("iqn.2026-11.org.example.shelfish:vol1"));
        assert!(!x.owns("iqn.2020-01.com.other:foreign"));
    }
}
