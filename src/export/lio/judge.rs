//! Judging a failed targetcli command by what configfs holds afterwards, never by its
//! message (a share named `exists` would match any search for "exists").

use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::lio::commands::tests::spec;
    use crate::export::lio::commands::{
        acl_commands, create_commands, delete_commands, unacl_commands,
    };
    use crate::export::ExportSpec;

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
