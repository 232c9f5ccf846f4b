//! iSCSI through the kernel's LIO target, driven with `targetcli` one command per change.
//!
//! The commands for a given export are built by pure functions (tested below); the
//! current ACL is read from configfs (`/sys/kernel/config/target/iscsi/<iqn>/tpgt_1/acls`),
//! so a change costs the commands for the difference, never a full `saveconfig`. shelfd
//! does not save LIO's config: it replays the tree at start-up (reconcile) instead.
//!
//! A failed targetcli command is judged by what configfs holds afterwards, never by its
//! message (which quotes the names it was given: a share named `exists` would match any
//! search for "exists"): a create whose object is in configfs, or a delete whose object is
//! not, was already done ([`expected_state`], [`judge`]). Backing stores are checked before
//! every apply and in reconcile, like tgt's ([`super::check_backing_store`]).
//!
//! The backstore of a thin volume unmaps (`emulate_tpu`, `emulate_tpws`: [`discard`]); each
//! apply reads both attributes back from configfs and sets them when they differ, so they
//! survive a resize (which re-creates the LUN) and reconcile puts them back.
//!
//! This machine's kernel has no LIO modules, so only the command builders and the judging
//! of recorded failures against a scratch configfs tree are exercised here; the VM tier
//! runs the driver against a real kernel.

mod commands;
mod discard;
mod judge;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{action, check_backing_store, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::cmd::{find_program, Cmd, Runner};

pub use commands::{
    acl_commands, backstore_kind, backstore_name, create_commands, delete_commands, unacl_commands,
};
pub use discard::{backstore_dir, read_unmap, unmap_command, wants_unmap, Unmap};
pub use judge::{expected_state, judge, ConfigfsObject, Expected};

/// Where LIO's iSCSI fabric lives in configfs.
pub const CONFIGFS_ISCSI: &str = "/sys/kernel/config/target/iscsi";

/// The names in a configfs directory (empty when it does not exist), read off the loop.
async fn list_names(dir: PathBuf) -> BTreeSet<String> {
    smol::unblock(move || {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    })
    .await
}

/// [`backstore_kind`], with the stat run off the event loop.
async fn kind_of(path: &Path) -> &'static str {
    let p = path.to_path_buf();
    smol::unblock(move || backstore_kind(&p)).await
}

/// The LIO driver.
#[derive(Debug)]
pub struct LioExporter {
    runner: Runner,
    configfs: PathBuf,
    iqn_prefix: String,
    serial: async_lock::Mutex<()>,
    /// Per target: whether its backstore unmaps, as last read back from configfs (or set).
    unmapping: std::sync::Mutex<BTreeMap<String, bool>>,
}

impl LioExporter {
    /// A driver owning targets named `<iqn_prefix>:*`.
    pub fn new(runner: Runner, iqn_prefix: &str) -> Self {
        LioExporter {
            runner,
            configfs: PathBuf::from(CONFIGFS_ISCSI),
            iqn_prefix: iqn_prefix.to_string(),
            serial: async_lock::Mutex::new(()),
            unmapping: Default::default(),
        }
    }

    /// configfs's `target` directory.
    fn configfs_root(&self) -> PathBuf {
        self.configfs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.configfs.clone())
    }

    async fn targetcli(&self, args: &[String]) -> Result<()> {
        let mut cmd = Cmd::new("targetcli");
        let secret_at = args.iter().position(|a| a.starts_with("password="));
        for (i, a) in args.iter().enumerate() {
            cmd = if Some(i) == secret_at {
                cmd.secret_arg(a.clone())
            } else {
                cmd.arg(a.clone())
            };
        }
        let result = self.runner.run(&cmd).await.map(drop);
        if result.is_ok() {
            return Ok(());
        }
        let (args, root) = (args.to_vec(), self.configfs_root());
        smol::unblock(move || judge(result, &args, &root))
            .await
            .map_err(Error::from)
    }

    async fn current_acl(&self, iqn: &str) -> BTreeSet<String> {
        let dir = self.configfs.join(iqn).join("tpgt_1").join("acls");
        list_names(dir).await
    }

    /// The export's [`Unmap`], read off the event loop.
    async fn unmap_state(&self, spec: &ExportSpec) -> Unmap {
        let (path, root, name) = (
            spec.path.clone(),
            self.configfs_root(),
            backstore_name(spec),
        );
        let thin = spec.thin;
        smol::unblock(move || Unmap::read(&path, &root, &name, thin)).await
    }

    /// Remember what the target's backstore does.
    fn note_unmapping(&self, target: &str, on: bool) {
        self.unmapping
            .lock()
            .expect("lio unmapping")
            .insert(target.to_string(), on);
    }

    /// Give the backstore the unmap attributes the export wants, when configfs holds others.
    async fn converge_unmap(&self, spec: &ExportSpec) -> Result<()> {
        let u = self.unmap_state(spec).await;
        match u.have {
            None => return Ok(()),
            Some(h) if h == Some(u.want) => {}
            Some(_) => self.targetcli(&unmap_command(spec, u.kind, u.want)).await?,
        }
        self.note_unmapping(&spec.export.target, u.want);
        Ok(())
    }

    async fn converge(&self, spec: &ExportSpec) -> Result<()> {
        let have = self.current_acl(&spec.export.target).await;
        let want: BTreeSet<String> = spec.export.allowed().into_iter().collect();
        let lun = self
            .configfs
            .join(&spec.export.target)
            .join("tpgt_1/lun/lun_1");
        let lun_there = smol::unblock(move || lun.is_dir()).await;
        // Anything that creates or grants is preceded by the check of the backing store:
        // never a planted object. A change that only takes access away runs no create
        // command, so it is never held up by one.
        if !lun_there || !want.is_subset(&have) {
            check_backing_store(spec).await?;
            let kind = kind_of(&spec.path).await;
            for c in create_commands(spec, kind) {
                self.targetcli(&c).await?;
            }
        }
        // Before any initiator is let in, so its first scan sees the provisioning.
        self.converge_unmap(spec).await?;
        for who in want.difference(&have) {
            for c in acl_commands(spec, who) {
                self.targetcli(&c).await?;
            }
        }
        for who in have.difference(&want) {
            for c in unacl_commands(spec, who) {
                self.targetcli(&c).await?;
            }
        }
        Ok(())
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
            if find_program("targetcli").is_none() {
                return Err(Error::Unsupported(
                    "targetcli is not installed (package targetcli-fb)".into(),
                ));
            }
            // LIO's core shows as configfs's `target` directory; the `iscsi` fabric below it
            // appears on first use (targetcli makes it), so a fresh host has only the core.
            let core = self
                .configfs
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.configfs.clone());
            let c = core.clone();
            if !smol::unblock(move || c.is_dir()).await {
                return Err(Error::Unsupported(format!(
                    "LIO is not available: {} is missing (configfs not mounted, or module target_core_mod not loaded)",
                    core.display()
                )));
            }
            Ok(())
        })
    }

    fn apply<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let _serial = self.serial.lock().await;
            self.converge(spec).await
        })
    }

    fn remove<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let _serial = self.serial.lock().await;
            for c in delete_commands(spec, kind_of(&spec.path).await) {
                self.targetcli(&c).await?;
            }
            self.unmapping
                .lock()
                .expect("lio unmapping")
                .remove(&spec.export.target);
            Ok(())
        })
    }

    fn refresh_size<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            // A fileio backstore's size is fixed when it is created: re-create the LUN.
            check_backing_store(spec).await?;
            let _serial = self.serial.lock().await;
            for c in delete_commands(spec, kind_of(&spec.path).await) {
                self.targetcli(&c).await?;
            }
            self.converge(spec).await
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
            let dir = self.configfs.clone();
            let live: BTreeSet<String> = list_names(dir).await;
            let mut wanted = BTreeSet::new();
            for spec in specs {
                wanted.insert(spec.export.target.clone());
                if let Err(Error::Tampered(why)) = check_backing_store(spec).await {
                    findings.push(Finding::new(
                        Driver::Lio,
                        "tampered",
                        &spec.export.target,
                        why,
                    ));
                    continue;
                }
                if !live.contains(&spec.export.target) {
                    findings.push(Finding::new(
                        Driver::Lio,
                        "missing",
                        &spec.export.target,
                        action(repair, "re-created"),
                    ));
                } else {
                    let u = self.unmap_state(spec).await;
                    if let Some(Some(on)) = u.have {
                        self.note_unmapping(&spec.export.target, on);
                    }
                    if u.drifted() {
                        findings.push(Finding::new(
                            Driver::Lio,
                            "drifted",
                            &spec.export.target,
                            action(
                                repair,
                                &format!(
                                    "set emulate_tpu and emulate_tpws to {}",
                                    u8::from(u.want)
                                ),
                            ),
                        ));
                    }
                }
                if repair {
                    self.converge(spec).await?;
                }
            }
            for iqn in live.difference(&wanted) {
                if iqn
                    .strip_prefix(&self.iqn_prefix)
                    .is_some_and(|r| r.starts_with(':'))
                {
                    if repair {
                        self.targetcli(&["/iscsi".into(), "delete".into(), iqn.clone()])
                            .await?;
                    }
                    findings.push(Finding::new(
                        Driver::Lio,
                        "orphan",
                        iqn,
                        action(repair, "removed: not in the tree"),
                    ));
                }
            }
            Ok(findings)
        })
    }
}
