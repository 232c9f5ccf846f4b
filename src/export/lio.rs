//! iSCSI through the kernel's LIO target, driven with `targetcli` one command per change.
//!
//! The commands for a given export are built by pure functions (tested below); the
//! current ACL is read from configfs (`/sys/kernel/config/target/iscsi/<iqn>/tpgt_1/acls`),
//! so a change costs the commands for the difference, never a full `saveconfig`. shelfd
//! does not save LIO's config: it replays the tree at start-up (reconcile) instead.
//!
//! This machine's kernel has no LIO modules, so only the command builders are exercised
//! here; the VM tier runs the driver against a real kernel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{action, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::cmd::{find_program, Cmd, Runner};

/// Where LIO's iSCSI fabric lives in configfs.
pub const CONFIGFS_ISCSI: &str = "/sys/kernel/config/target/iscsi";

/// The backstore name of an export (`shelf-<share-id>`).
pub fn backstore_name(spec: &ExportSpec) -> String {
    format!("shelf-{}", spec.export.share)
}

fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

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

/// The backstore kind for a path: `block` for a block device, `fileio` for a file.
pub fn backstore_kind(path: &Path) -> &'static str {
    if is_block_device(path) {
        "block"
    } else {
        "fileio"
    }
}

/// targetcli argument lists that create an export from nothing (ACL entries added
/// separately with [`acl_commands`]).
pub fn create_commands(spec: &ExportSpec, kind: &str) -> Vec<Vec<String>> {
    let bs = backstore_name(spec);
    let iqn = &spec.export.target;
    let path = spec.path.display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut cmds = vec![
        if kind == "block" {
            s(&[
                "/backstores/block",
                "create",
                &format!("name={bs}"),
                &format!("dev={path}"),
            ])
        } else {
            s(&[
                "/backstores/fileio",
                "create",
                &format!("name={bs}"),
                &format!("file_or_dev={path}"),
                "write_back=false",
            ])
        },
        s(&["/iscsi", "create", iqn]),
        s(&[
            &format!("/iscsi/{iqn}/tpg1/luns"),
            "create",
            &format!("/backstores/{kind}/{bs}"),
            "lun=1",
        ]),
        s(&[
            &format!("/iscsi/{iqn}/tpg1"),
            "set",
            "attribute",
            "generate_node_acls=0",
            "demo_mode_write_protect=1",
            &format!("authentication={}", u8::from(spec.export.options.chap)),
        ]),
    ];
    cmds.push(s(&[
        "/iscsi/",
        "set",
        "global",
        "auto_add_default_portal=true",
    ]));
    cmds
}

/// targetcli argument lists that add one initiator to the ACL, with CHAP when the export
/// has it. The secret is the last argument of the `set auth` command.
pub fn acl_commands(spec: &ExportSpec, initiator: &str) -> Vec<Vec<String>> {
    let iqn = &spec.export.target;
    let mut cmds = vec![vec![
        format!("/iscsi/{iqn}/tpg1/acls"),
        "create".into(),
        initiator.into(),
        "add_mapped_luns=true".into(),
    ]];
    if let (true, Some(user), Some(secret)) = (
        spec.export.options.chap,
        &spec.export.chap_user,
        &spec.chap_secret,
    ) {
        cmds.push(vec![
            format!("/iscsi/{iqn}/tpg1/acls/{initiator}"),
            "set".into(),
            "auth".into(),
            format!("userid={user}"),
            format!("password={secret}"),
        ]);
    }
    cmds
}

/// targetcli argument lists that remove one initiator from the ACL.
pub fn unacl_commands(spec: &ExportSpec, initiator: &str) -> Vec<Vec<String>> {
    vec![vec![
        format!("/iscsi/{}/tpg1/acls", spec.export.target),
        "delete".into(),
        initiator.into(),
    ]]
}

/// targetcli argument lists that remove an export entirely.
pub fn delete_commands(spec: &ExportSpec, kind: &str) -> Vec<Vec<String>> {
    vec![
        vec!["/iscsi".into(), "delete".into(), spec.export.target.clone()],
        vec![
            format!("/backstores/{kind}"),
            "delete".into(),
            backstore_name(spec),
        ],
    ]
}

/// The LIO driver.
#[derive(Debug)]
pub struct LioExporter {
    runner: Runner,
    configfs: PathBuf,
    iqn_prefix: String,
    serial: async_lock::Mutex<()>,
}

impl LioExporter {
    /// A driver owning targets named `<iqn_prefix>:*`.
    pub fn new(runner: Runner, iqn_prefix: &str) -> Self {
        LioExporter {
            runner,
            configfs: PathBuf::from(CONFIGFS_ISCSI),
            iqn_prefix: iqn_prefix.to_string(),
            serial: async_lock::Mutex::new(()),
        }
    }

    async fn targetcli(&self, args: &[String], tolerate: &str) -> Result<()> {
        let mut cmd = Cmd::new("targetcli");
        let secret_at = args.iter().position(|a| a.starts_with("password="));
        for (i, a) in args.iter().enumerate() {
            cmd = if Some(i) == secret_at {
                cmd.secret_arg(a.clone())
            } else {
                cmd.arg(a.clone())
            };
        }
        match self.runner.run(&cmd).await {
            Ok(_) => Ok(()),
            Err(e)
                if !tolerate.is_empty()
                    && (e.stderr().contains(tolerate) || e.to_string().contains(tolerate)) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn current_acl(&self, iqn: &str) -> BTreeSet<String> {
        let dir = self.configfs.join(iqn).join("tpgt_1").join("acls");
        list_names(dir).await
    }

    async fn converge(&self, spec: &ExportSpec) -> Result<()> {
        let kind = kind_of(&spec.path).await;
        for c in create_commands(spec, kind) {
            self.targetcli(&c, "exists").await?;
        }
        let have = self.current_acl(&spec.export.target).await;
        let want: BTreeSet<String> = spec.export.allowed().into_iter().collect();
        for who in want.difference(&have) {
            for c in acl_commands(spec, who) {
                self.targetcli(&c, "exists").await?;
            }
        }
        for who in have.difference(&want) {
            for c in unacl_commands(spec, who) {
                self.targetcli(&c, "No such").await?;
            }
        }
        Ok(())
    }
}

impl Exporter for LioExporter {
    fn driver(&self) -> Driver {
        Driver::Lio
    }

    fn probe(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            if find_program("targetcli").is_none() {
                return Err(Error::Unsupported(
                    "targetcli is not installed (package targetcli-fb)".into(),
                ));
            }
            let dir = self.configfs.clone();
            if !smol::unblock(move || dir.is_dir()).await {
                return Err(Error::Unsupported(format!(
                    "LIO is not available: {} is missing (modules target_core_mod and iscsi_target_mod not loaded)",
                    self.configfs.display()
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
                self.targetcli(&c, "No such").await?;
            }
            Ok(())
        })
    }

    fn refresh_size<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            // A fileio backstore's size is fixed when it is created: re-create the LUN.
            let _serial = self.serial.lock().await;
            for c in delete_commands(spec, kind_of(&spec.path).await) {
                self.targetcli(&c, "No such").await?;
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
                if !live.contains(&spec.export.target) {
                    findings.push(Finding::new(
                        Driver::Lio,
                        "missing",
                        &spec.export.target,
                        action(repair, "re-created"),
                    ));
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
                        self.targetcli(&["/iscsi".into(), "delete".into(), iqn.clone()], "No such")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Export, ExportOptions, Protocol, ShareState};

    fn spec() -> ExportSpec {
        ExportSpec {
            export: Export {
                id: "e".into(),
                share: "5f1c".into(),
                share_name: "vol".into(),
                protocol: Protocol::Iscsi,
                driver: Driver::Lio,
                state: ShareState::Available,
                options: ExportOptions::default(),
                target: "iqn.2026-11.org.example.shelf:vol".into(),
                tid: None,
                fsid: None,
                chap_user: Some("shelf-ab12".into()),
                attached: vec![],
                created_at: 0,
            },
            path: "/pool/shares/5f1c/volume".into(),
            chap_secret: Some("s3cret".into()),
        }
    }

    #[test]
    fn create_commands_for_a_file_volume() {
        let c = create_commands(&spec(), "fileio");
        assert_eq!(
            c[0],
            [
                "/backstores/fileio",
                "create",
                "name=shelf-5f1c",
                "file_or_dev=/pool/shares/5f1c/volume",
                "write_back=false"
            ]
        );
        assert_eq!(
            c[1],
            ["/iscsi", "create", "iqn.2026-11.org.example.shelf:vol"]
        );
        assert_eq!(
            c[2],
            [
                "/iscsi/iqn.2026-11.org.example.shelf:vol/tpg1/luns",
                "create",
                "/backstores/fileio/shelf-5f1c",
                "lun=1"
            ]
        );
        assert!(c[3].contains(&"authentication=1".to_string()));
        assert!(
            c[3].contains(&"generate_node_acls=0".to_string()),
            "no demo mode: ACLs only"
        );
    }

    #[test]
    fn block_devices_use_the_block_backstore() {
        let c = create_commands(&spec(), "block");
        assert_eq!(
            c[0],
            [
                "/backstores/block",
                "create",
                "name=shelf-5f1c",
                "dev=/pool/shares/5f1c/volume"
            ]
        );
    }

    #[test]
    fn acl_commands_carry_chap() {
        let c = acl_commands(&spec(), "iqn.1993-08.org.debian:01:abc");
        assert_eq!(c[0][2], "iqn.1993-08.org.debian:01:abc");
        assert_eq!(c[1][3], "userid=shelf-ab12");
        assert_eq!(c[1][4], "password=s3cret");
        let mut no_chap = spec();
        no_chap.export.options.chap = false;
        assert_eq!(
            acl_commands(&no_chap, "iqn.1993-08.org.debian:01:abc").len(),
            1
        );
    }

    #[test]
    fn delete_and_unacl_commands() {
        assert_eq!(
            delete_commands(&spec(), "fileio")[0],
            ["/iscsi", "delete", "iqn.2026-11.org.example.shelf:vol"]
        );
        assert_eq!(unacl_commands(&spec(), "iqn.x")[0][1], "delete");
    }
}
