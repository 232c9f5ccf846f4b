//! targetcli argument lists for an export, built by pure functions (tested below).

use std::path::Path;

use crate::export::ExportSpec;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Driver, Export, ExportOptions, Protocol, ShareState};

    pub(crate) fn spec() -> ExportSpec {
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
            thin: true,
            backing: Default::default(),
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
