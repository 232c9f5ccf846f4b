//! iSCSI through the kernel's LIO target, written to configfs directly (no `targetcli`: it
//! started a Python interpreter per change, hundreds of ms, seconds under the VM's TCG).
//! Layout and reading: [`layout`]; what an export wants and the plans: [`plan`].
//!
//! Every change reads what configfs holds for the export ([`read_state`]), plans the steps
//! from there to what the export wants ([`plan_converge`], [`plan_remove`]) and runs them
//! through [`crate::sys::configfs`] off the event loop. Each step is idempotent and the plan
//! is made from what configfs holds, so a change interrupted half-way (a crash, a failed
//! step) is finished by the next apply, the start-up replay or reconcile; a failure is
//! judged by configfs, never by a message. No process is started. A CHAP secret is written
//! to `acls/<initiator>/auth/password` and appears in no argv, log, error or reply
//! ([`Secret`]).
//!
//! The backstore of a thin volume unmaps (`emulate_tpu`, `emulate_tpws`: [`discard`]), set
//! before its LUN is linked and read back by every apply and reconcile. A resize of a file
//! volume re-makes its fileio backstore (its size is fixed when it is made) and LUN; an
//! LV's iblock backstore reads the device's size live, so nothing is re-made.
//!
//! Shelf owns the targets under its IQN prefix and their `shelf-*` backstores; reconcile
//! removes nothing else. This machine's kernel has no LIO modules: the plans are tested
//! here (`lio/tests.rs`), the driver against a real kernel in the VM tier.

mod discard;
mod layout;
mod plan;
#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod tests;
mod want;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{action, check_backing_store, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::configfs::{self, Op};

pub use discard::{read_unmap, wants_unmap};
pub use layout::{backstore_name, parse_fileio_size, read_found, read_state, Kind, State};
pub use plan::{drift, plan_converge, plan_remove, Chap, Want};
pub use want::{kind_of, listen_portal, want_of};

/// configfs's `target` directory, where LIO lives.
pub const CONFIGFS_TARGET: &str = "/sys/kernel/config/target";

/// A hint for a failed step, from what it was doing.
fn hint(op: &Op) -> &'static str {
    match op {
        Op::Mkdir(p) if p.starts_with("core") => {
            " (is the backstore's module loaded? modprobe target_core_file target_core_iblock)"
        }
        Op::Mkdir(p) if p.components().any(|c| c.as_os_str() == "np") => {
            " (another iSCSI target, such as tgtd, may hold the portal's address)"
        }
        Op::Mkdir(p) if p.as_os_str() == "iscsi" => " (modprobe iscsi_target_mod)",
        _ => "",
    }
}

/// The LIO driver.
#[derive(Debug)]
pub struct LioExporter {
    root: PathBuf,
    iqn_prefix: String,
    portal: String,
    serial: async_lock::Mutex<()>,
    /// Per target: whether its backstore unmaps, as last read back from configfs (or set).
    unmapping: std::sync::Mutex<BTreeMap<String, bool>>,
}

impl LioExporter {
    /// A driver for configfs's `target` directory `root` (the kernel's is
    /// [`CONFIGFS_TARGET`]), owning targets named `<iqn_prefix>:*`, listening on the port
    /// of `portal` ([`listen_portal`]).
    pub fn new(root: PathBuf, iqn_prefix: &str, portal: SocketAddr) -> Self {
        LioExporter {
            root,
            iqn_prefix: iqn_prefix.to_string(),
            portal: listen_portal(portal),
            serial: async_lock::Mutex::new(()),
            unmapping: Default::default(),
        }
    }

    fn owns(&self, iqn: &str) -> bool {
        iqn.strip_prefix(&self.iqn_prefix)
            .is_some_and(|r| r.starts_with(':'))
    }

    /// Run `ops` off the event loop; a failed step names itself (never a secret).
    async fn run(&self, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let root = self.root.clone();
        smol::unblock(move || configfs::run(&root, &ops))
            .await
            .map_err(|e| Error::io(format!("lio configfs: {}{}", e.op, hint(&e.op)), e.error))
    }

    /// The export's wanted state and what configfs holds for it, read off the loop.
    async fn read(&self, spec: &ExportSpec) -> Result<(Want, State)> {
        let (spec, root, portal) = (spec.clone(), self.root.clone(), self.portal.clone());
        smol::unblock(move || {
            let want = want_of(&spec, &portal)?;
            let have = read_state(&root, &want.iqn, want.kind, &want.name)
                .map_err(|e| Error::io(format!("lio reading configfs ({})", root.display()), e))?;
            Ok((want, have))
        })
        .await
    }

    fn note_unmapping(&self, target: &str, on: Option<bool>) {
        let mut m = self.unmapping.lock().expect("lio unmapping");
        match on {
            Some(on) => m.insert(target.to_string(), on),
            None => m.remove(target),
        };
    }

    /// Bring configfs in line with `spec`; the caller holds `serial`.
    async fn converge(&self, spec: &ExportSpec, force_recreate: bool) -> Result<()> {
        let (want, have) = self.read(spec).await?;
        let ops = plan_converge(&have, &want, force_recreate);
        // Anything that makes or links an object is preceded by the check of the backing
        // store: never a planted object. A change that only takes access away is never
        // held up by it.
        if ops
            .iter()
            .any(|o| matches!(o, Op::Mkdir(_) | Op::Link { .. }))
        {
            check_backing_store(spec).await?;
        }
        self.run(ops).await?;
        self.note_unmapping(&want.iqn, Some(want.unmap));
        Ok(())
    }

    /// Targets under shelf's prefix that are not `wanted`: reported, and removed on repair.
    async fn reconcile_orphans(
        &self,
        wanted: &BTreeSet<String>,
        repair: bool,
    ) -> Result<Vec<Finding>> {
        let root = self.root.clone();
        let live = smol::unblock(move || configfs::dirs(&root.join("iscsi")))
            .await
            .map_err(|e| Error::io("lio listing targets", e))?;
        let mut findings = Vec::new();
        for iqn in live {
            if self.owns(&iqn) && !wanted.contains(&iqn) {
                if repair {
                    self.remove_found(&iqn).await?;
                }
                findings.push(Finding::new(
                    Driver::Lio,
                    "orphan",
                    &iqn,
                    action(repair, "removed: not in the tree"),
                ));
            }
        }
        Ok(findings)
    }

    /// Remove an orphan target found in configfs, and its `shelf-*` backstore.
    async fn remove_found(&self, iqn: &str) -> Result<()> {
        let (root, i) = (self.root.clone(), iqn.to_string());
        let (have, name) = smol::unblock(move || read_found(&root, &i))
            .await
            .map_err(|e| Error::io("lio reading configfs", e))?;
        self.run(plan_remove(&have, iqn, &name)).await
    }
}

impl Exporter for LioExporter {
    fn driver(&self) -> Driver {
        Driver::Lio
    }

    fn discards(&self, spec: &ExportSpec) -> bool {
        // What configfs was last seen to hold for this target (apply and reconcile read it
        // back); a target not seen yet is not said to unmap.
        spec.thin
            && self
                .unmapping
                .lock()
                .expect("lio unmapping")
                .get(&spec.export.target)
                .copied()
                .unwrap_or(false)
    }

    fn probe(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            let root = self.root.clone();
            let kernel = root.starts_with("/sys/kernel/config");
            let (core, iscsi) = smol::unblock(move || {
                (
                    configfs::is_dir(&root) && configfs::is_dir(&root.join("core")),
                    configfs::is_dir(&root.join("iscsi"))
                        || (kernel && configfs::module_loaded("iscsi_target_mod")),
                )
            })
            .await;
            let root = self.root.display();
            if !core {
                return Err(Error::Unsupported(format!(
                    "LIO is not available: {root} is missing (configfs not mounted, or module \
                     target_core_mod not loaded)"
                )));
            }
            if !iscsi {
                return Err(Error::Unsupported(format!(
                    "LIO's iSCSI fabric is not available: {root}/iscsi is missing and module \
                     iscsi_target_mod is not loaded (modprobe iscsi_target_mod)"
                )));
            }
            Ok(())
        })
    }

    fn apply<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let _serial = self.serial.lock().await;
            self.converge(spec, false).await
        })
    }

    fn remove<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let _serial = self.serial.lock().await;
            if spec.export.target.is_empty() {
                return Ok(());
            }
            // Whatever the volume is now (or if it is gone): the backstore of either kind.
            let (iqn, name) = (
                spec.export.target.clone(),
                backstore_name(&spec.export.share),
            );
            if !layout::one_component(&iqn) || !layout::one_component(&name) {
                return Err(Error::Invalid(format!(
                    "LIO target {iqn:?} is not a configfs name"
                )));
            }
            let (root, i, n) = (self.root.clone(), iqn.clone(), name.clone());
            let have = smol::unblock(move || {
                let mut s = read_state(&root, &i, Kind::File, &n)?;
                if s.backstore.is_none() {
                    s.backstore = layout::read_backstore(&root, Kind::Block, &n)?.0;
                }
                Ok::<_, std::io::Error>(s)
            })
            .await
            .map_err(|e| Error::io("lio reading configfs", e))?;
            self.run(plan_remove(&have, &iqn, &name)).await?;
            self.note_unmapping(&iqn, None);
            Ok(())
        })
    }

    fn refresh_size<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            check_backing_store(spec).await?;
            let _serial = self.serial.lock().await;
            // A file's backstore is made again at the new size (with its LUN and mappings);
            // a block device's size is read live by iblock.
            self.converge(spec, true).await
        })
    }

    fn reconcile<'a>(
        &'a self,
        specs: &'a [ExportSpec],
        repair: bool,
    ) -> BoxFut<'a, Result<Vec<Finding>>> {
        Box::pin(async move {
            let _serial = self.serial.lock().await;
            let mut findings = Vec::new();
            let mut wanted = BTreeSet::new();
            for spec in specs {
                wanted.insert(spec.export.target.clone());
                let t = &spec.export.target;
                if let Err(Error::Tampered(why)) = check_backing_store(spec).await {
                    findings.push(Finding::new(Driver::Lio, "tampered", t, why));
                    continue;
                }
                let (want, have) = match self.read(spec).await {
                    Ok(r) => r,
                    // One export that cannot be read (its volume gone) holds up no other.
                    Err(e) => {
                        let why = format!("not checked: {e}");
                        findings.push(Finding::new(Driver::Lio, "unavailable", t, why));
                        continue;
                    }
                };
                if let Some(b) = &have.backstore {
                    self.note_unmapping(t, b.unmap);
                }
                let differences = drift(&have, &want);
                if differences.is_empty() {
                    continue;
                }
                let kind = if have.target.is_none() {
                    "missing"
                } else {
                    "drifted"
                };
                if repair {
                    self.converge(spec, false).await?;
                }
                // What differs is said in verify's answer too (never a secret's value).
                let done = match (kind, repair) {
                    ("missing", _) => action(repair, "re-created"),
                    (_, true) => format!("repaired: {}", differences.join("; ")),
                    (_, false) => format!("{}: {}", action(false, ""), differences.join("; ")),
                };
                findings.push(Finding::new(Driver::Lio, kind, t, done));
            }
            findings.extend(self.reconcile_orphans(&wanted, repair).await?);
            Ok(findings)
        })
    }
}
