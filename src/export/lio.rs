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
//! This machine's kernel has no LIO modules, so only the command builders and the judging
//! of recorded failures against a scratch configfs tree are exercised here; the VM tier
//! runs the driver against a real kernel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{action, check_backing_store, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::cmd::{find_program, Cmd, Runner};

/// Where LIO's iSCSI fabric lives in configfs.
pub const CONFIGFS_ISCSI: &str = "/sys/kernel/config/target/iscsi";

/// The backstore name of an export (`shelf-<share-id>`).
pub fn backstore_name(spec: &ExportSpec) -> String {
    format!("shelf-{}", spec.export.share)
}

/// A block device under `/dev` (an LVM pool's volume). A path elsewhere is a file pool's
/// volume whatever it is now: a link planted there to a host disk is never taken for one.
fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    path.starts_with("/dev/")
        && std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
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

/// A configfs object a targetcli command makes or removes, relative to configfs's
/// `target` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigfsObject {
    /// A backstore `name` of kind `fileio` or `block` (under `core/<hba>_<n>/`, where the
    /// HBA is `fileio` or `iblock`).
    Backstore {
        /// `fileio` or `block`.
        kind: String,
        /// The backstore's name.
        name: String,
    },
    /// A directory at this path below `target/`.
    Dir(PathBuf),
}

/// What configfs holds once a targetcli command has done its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The object exists.
    Present(ConfigfsObject),
    /// The object does not exist.
    Absent(ConfigfsObject),
    /// Nothing to look at (`set` commands): only the exit status counts.
    Unchecked,
}

/// What a targetcli command built by this module leaves in configfs (pure).
pub fn expected_state(args: &[String]) -> Expected {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let iscsi = |iqn: &str, rest: &[&str]| {
        let mut p = PathBuf::from("iscsi").join(iqn);
        p.extend(rest);
        ConfigfsObject::Dir(p)
    };
    let tpg = |path: &str, tail: &str| {
        path.strip_prefix("/iscsi/")
            .and_then(|r| r.strip_suffix(tail))
            .map(str::to_string)
    };
    match a.as_slice() {
        [bs, "create", name, ..] if bs.starts_with("/backstores/") => {
            match name.strip_prefix("name=") {
                Some(n) => Expected::Present(ConfigfsObject::Backstore {
                    kind: bs["/backstores/".len()..].to_string(),
                    name: n.to_string(),
                }),
                None => Expected::Unchecked,
            }
        }
        [bs, "delete", name] if bs.starts_with("/backstores/") => {
            Expected::Absent(ConfigfsObject::Backstore {
                kind: bs["/backstores/".len()..].to_string(),
                name: name.to_string(),
            })
        }
        ["/iscsi", "create", iqn] => Expected::Present(iscsi(iqn, &[])),
        ["/iscsi", "delete", iqn] => Expected::Absent(iscsi(iqn, &[])),
        [path, "create", _, lun] if lun.starts_with("lun=") => match tpg(path, "/tpg1/luns") {
            Some(iqn) => Expected::Present(iscsi(
                &iqn,
                &["tpgt_1", "lun", &format!("lun_{}", &lun[4..])],
            )),
            None => Expected::Unchecked,
        },
        [path, verb @ ("create" | "delete"), who, ..] => match tpg(path, "/tpg1/acls") {
            Some(iqn) => {
                let o = iscsi(&iqn, &["tpgt_1", "acls", who]);
                if *verb == "create" {
                    Expected::Present(o)
                } else {
                    Expected::Absent(o)
                }
            }
            None => Expected::Unchecked,
        },
        _ => Expected::Unchecked,
    }
}

/// Whether `object` exists under configfs's `target` directory `root`.
fn object_exists(root: &Path, object: &ConfigfsObject) -> bool {
    match object {
        ConfigfsObject::Dir(p) => root.join(p).is_dir(),
        ConfigfsObject::Backstore { kind, name } => {
            let hba = if kind == "block" {
                "iblock_"
            } else {
                "fileio_"
            };
            std::fs::read_dir(root.join("core")).is_ok_and(|d| {
                d.filter_map(|e| e.ok()).any(|e| {
                    e.file_name().to_string_lossy().starts_with(hba) && e.path().join(name).is_dir()
                })
            })
        }
    }
}

/// Judge a targetcli command's result: a success stands; a failure stands too when
/// configfs (`root`, its `target` directory) already holds what the command was for (a
/// create whose object exists, a delete whose object is gone), which is how a retry or a
/// replay after a crash finds it. The command's message is never looked at.
pub fn judge<E>(
    result: std::result::Result<(), E>,
    args: &[String],
    root: &Path,
) -> std::result::Result<(), E> {
    let Err(e) = result else { return Ok(()) };
    match expected_state(args) {
        Expected::Present(o) if object_exists(root, &o) => Ok(()),
        Expected::Absent(o) if !object_exists(root, &o) => Ok(()),
        _ => Err(e),
    }
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

    /// targetcli-fb's own messages for these failures (as printed to its stderr), kept
    /// here to show that the judging never reads them: each one "contains" the words the
    /// old search looked for, or a share name does.
    const RECORDED: &[&str] = &[
        "This Target already exists in configFS",
        "Storage object fileio/shelf-5f1c exists",
        "No such path /iscsi/iqn.2026-11.org.example.shelf:exists",
        "Could not create Target in configFS",
    ];

    fn exists_spec() -> ExportSpec {
        let mut s = spec();
        s.export.share_name = "exists".into();
        s.export.target = "iqn.2026-11.org.example.shelf:exists".into();
        s
    }

    #[test]
    fn expected_state_of_each_command() {
        let s = exists_spec();
        let c = create_commands(&s, "fileio");
        let bs = ConfigfsObject::Backstore {
            kind: "fileio".into(),
            name: "shelf-5f1c".into(),
        };
        let t = PathBuf::from("iscsi/iqn.2026-11.org.example.shelf:exists");
        assert_eq!(expected_state(&c[0]), Expected::Present(bs.clone()));
        assert_eq!(
            expected_state(&c[1]),
            Expected::Present(ConfigfsObject::Dir(t.clone()))
        );
        assert_eq!(
            expected_state(&c[2]),
            Expected::Present(ConfigfsObject::Dir(t.join("tpgt_1/lun/lun_1")))
        );
        assert_eq!(expected_state(&c[3]), Expected::Unchecked);
        assert_eq!(expected_state(&c[4]), Expected::Unchecked);
        let acl = t.join("tpgt_1/acls/iqn.x");
        assert_eq!(
            expected_state(&acl_commands(&s, "iqn.x")[0]),
            Expected::Present(ConfigfsObject::Dir(acl.clone()))
        );
        assert_eq!(
            expected_state(&acl_commands(&s, "iqn.x")[1]),
            Expected::Unchecked
        );
        assert_eq!(
            expected_state(&unacl_commands(&s, "iqn.x")[0]),
            Expected::Absent(ConfigfsObject::Dir(acl))
        );
        let d = delete_commands(&s, "fileio");
        assert_eq!(
            expected_state(&d[0]),
            Expected::Absent(ConfigfsObject::Dir(t))
        );
        assert_eq!(expected_state(&d[1]), Expected::Absent(bs));
    }

    #[test]
    fn a_share_named_exists_does_not_turn_failures_into_success() {
        let root = tempfile::tempdir().unwrap();
        let s = exists_spec();
        for cmd in create_commands(&s, "fileio")
            .into_iter()
            .chain(acl_commands(&s, "iqn.x"))
        {
            for msg in RECORDED {
                // Nothing in configfs: every failed create is a failure, whatever it says.
                assert_eq!(
                    judge(Err(*msg), &cmd, root.path()),
                    Err(*msg),
                    "{cmd:?} failing with {msg:?}"
                );
            }
        }
    }

    #[test]
    fn a_failure_whose_work_is_in_configfs_is_already_done() {
        let root = tempfile::tempdir().unwrap();
        let s = exists_spec();
        let t = root
            .path()
            .join("iscsi/iqn.2026-11.org.example.shelf:exists");
        std::fs::create_dir_all(t.join("tpgt_1/lun/lun_1")).unwrap();
        std::fs::create_dir_all(t.join("tpgt_1/acls/iqn.x")).unwrap();
        std::fs::create_dir_all(root.path().join("core/fileio_0/shelf-5f1c")).unwrap();
        let c = create_commands(&s, "fileio");
        for cmd in &c[..3] {
            assert_eq!(judge(Err(RECORDED[0]), cmd, root.path()), Ok(()), "{cmd:?}");
        }
        // `set` commands have nothing to look at: their failure stands.
        assert_eq!(
            judge(Err(RECORDED[0]), &c[3], root.path()),
            Err(RECORDED[0])
        );
        assert_eq!(
            judge(Err(RECORDED[1]), &acl_commands(&s, "iqn.x")[0], root.path()),
            Ok(())
        );
        // A delete whose object is still there failed, even with "No such" in its text.
        let d = delete_commands(&s, "fileio");
        assert_eq!(
            judge(Err(RECORDED[2]), &d[0], root.path()),
            Err(RECORDED[2])
        );
        assert_eq!(
            judge(Err(RECORDED[2]), &d[1], root.path()),
            Err(RECORDED[2])
        );
        // A block backstore is looked for under an iblock HBA, not a fileio one.
        let block = delete_commands(&s, "block");
        assert_eq!(judge(Err("x"), &block[1], root.path()), Ok(()));
        std::fs::remove_dir_all(&t).unwrap();
        assert_eq!(judge(Err(RECORDED[2]), &d[0], root.path()), Ok(()));
        // A success is a success.
        assert_eq!(judge::<&str>(Ok(()), &d[0], root.path()), Ok(()));
    }
}
