//! The LIO plans, pure: from what configfs holds to what an export wants (the readers:
//! `read_tests.rs`).

use std::path::PathBuf;

use super::layout::{Acl, Backstore, Tpg};
use super::*;
use crate::sys::configfs::Secret;

const IQN: &str = "iqn.2026-11.org.example.shelf:vol";
const INI: &str = "iqn.1993-08.org.debian:01:abc";
const BS: &str = "shelf-5f1c";

pub(super) fn want() -> Want {
    Want {
        iqn: IQN.into(),
        name: BS.into(),
        kind: Kind::File,
        path: "/pool/shares/5f1c/volume".into(),
        size: 67108864,
        serial: "5f1c".into(),
        unmap: true,
        chap_required: true,
        portal: "0.0.0.0:3260".into(),
        acls: [(
            INI.to_string(),
            Some(Chap {
                user: "shelf-ab12".into(),
                secret: Secret::new("s3cret-value"),
            }),
        )]
        .into(),
    }
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn w(path: &str, v: &str) -> Op {
    Op::Write(p(path), v.into())
}

const T: &str = "iscsi/iqn.2026-11.org.example.shelf:vol/tpgt_1";

/// The state the plan from nothing leads to (what the reader gives back afterwards).
fn made(want: &Want) -> State {
    let acls = want
        .acls
        .iter()
        .map(|(who, chap)| {
            let acl = Acl {
                mapped: [("lun_1".to_string(), vec![BS.to_string()])].into(),
                userid: chap.as_ref().map(|c| c.user.clone()).unwrap_or_default(),
                password: chap.as_ref().map(|c| c.secret.clone()),
            };
            (who.clone(), acl)
        })
        .collect();
    State {
        backstore: Some(Backstore {
            hba: "fileio_0".into(),
            hba_alone: true,
            enabled: true,
            udev_path: want.path.clone(),
            size: Some(want.size),
            unmap: Some(want.unmap),
        }),
        free_hba: 1,
        target: Some(Some(Tpg {
            enabled: true,
            attributes: [
                ("generate_node_acls", "0"),
                ("demo_mode_write_protect", "1"),
                ("authentication", if want.chap_required { "1" } else { "0" }),
            ]
            .into_iter()
            .map(|(a, v)| (a.to_string(), v.to_string()))
            .collect(),
            portals: [want.portal.clone()].into(),
            luns: [(
                "lun_1".to_string(),
                vec![(BS.to_string(), format!("core/fileio_0/{BS}"))],
            )]
            .into(),
            acls,
        })),
    }
}

#[test]
fn from_nothing_the_backstore_comes_first_and_the_tpg_is_enabled_last() {
    let ops = plan_converge(&State::default(), &want(), false);
    let bs = "core/fileio_0/shelf-5f1c";
    let expected = vec![
        Op::Mkdir(p("core/fileio_0")),
        Op::Mkdir(p(bs)),
        w(
            &format!("{bs}/control"),
            "fd_dev_name=/pool/shares/5f1c/volume",
        ),
        w(&format!("{bs}/control"), "fd_dev_size=67108864"),
        w(&format!("{bs}/udev_path"), "/pool/shares/5f1c/volume"),
        w(&format!("{bs}/enable"), "1"),
        w(&format!("{bs}/wwn/vpd_unit_serial"), "5f1c"),
        w(&format!("{bs}/attrib/emulate_tpu"), "1"),
        w(&format!("{bs}/attrib/emulate_tpws"), "1"),
        Op::Mkdir(p("iscsi")),
        Op::Mkdir(p("iscsi/iqn.2026-11.org.example.shelf:vol")),
        Op::Mkdir(p(T)),
        w(&format!("{T}/attrib/generate_node_acls"), "0"),
        w(&format!("{T}/attrib/demo_mode_write_protect"), "1"),
        w(&format!("{T}/attrib/authentication"), "1"),
        Op::Mkdir(p(&format!("{T}/np/0.0.0.0:3260"))),
        Op::Mkdir(p(&format!("{T}/lun/lun_1"))),
        Op::Link {
            target: p(bs),
            link: p(&format!("{T}/lun/lun_1/{BS}")),
        },
        Op::Mkdir(p(&format!("{T}/acls/{INI}"))),
        w(&format!("{T}/acls/{INI}/auth/userid"), "shelf-ab12"),
        Op::WriteSecret(
            p(&format!("{T}/acls/{INI}/auth/password")),
            Secret::new("s3cret-value"),
        ),
        Op::Mkdir(p(&format!("{T}/acls/{INI}/lun_1"))),
        Op::Link {
            target: p(&format!("{T}/lun/lun_1")),
            link: p(&format!("{T}/acls/{INI}/lun_1/{BS}")),
        },
        w(&format!("{T}/enable"), "1"),
    ];
    assert_eq!(ops, expected);
}

#[test]
fn in_line_is_no_step_and_no_drift() {
    let want = want();
    let have = made(&want);
    assert_eq!(plan_converge(&have, &want, false), vec![]);
    assert!(drift(&have, &want).is_empty(), "{:?}", drift(&have, &want));
    // A block device is never re-made for its size.
    let mut block = want.clone();
    block.kind = Kind::Block;
    let mut have_block = made(&want);
    let b = have_block.backstore.as_mut().unwrap();
    (b.hba, b.size) = ("iblock_0".into(), None);
    have_block.target.as_mut().unwrap().as_mut().unwrap().luns = [(
        "lun_1".into(),
        vec![(BS.into(), format!("core/iblock_0/{BS}"))],
    )]
    .into();
    assert_eq!(plan_converge(&have_block, &block, true), vec![]);
}

#[test]
fn a_removed_acl_comes_back_with_its_mapping_and_chap() {
    let want = want();
    let mut have = made(&want);
    have.target.as_mut().unwrap().as_mut().unwrap().acls.clear();
    let ops = plan_converge(&have, &want, false);
    assert_eq!(ops.len(), 5, "{ops:#?}");
    assert_eq!(ops[0], Op::Mkdir(p(&format!("{T}/acls/{INI}"))));
    assert!(matches!(&ops[2], Op::WriteSecret(_, s) if s.expose() == "s3cret-value"));
    assert_eq!(drift(&have, &want), vec![format!("ACL {INI} missing")]);
}

#[test]
fn a_removed_lun_is_made_again_with_every_mapping() {
    let want = want();
    let mut have = made(&want);
    let tpg = have.target.as_mut().unwrap().as_mut().unwrap();
    tpg.luns.clear();
    // The kernel drops an ACL's mapping with the LUN, leaving an empty lun_1 directory.
    tpg.acls.get_mut(INI).unwrap().mapped = [("lun_1".to_string(), vec![])].into();
    let ops = plan_converge(&have, &want, false);
    assert_eq!(
        ops,
        vec![
            Op::Rmdir(p(&format!("{T}/acls/{INI}/lun_1"))),
            Op::Mkdir(p(&format!("{T}/lun/lun_1"))),
            Op::Link {
                target: p(&format!("core/fileio_0/{BS}")),
                link: p(&format!("{T}/lun/lun_1/{BS}")),
            },
            Op::Mkdir(p(&format!("{T}/acls/{INI}/lun_1"))),
            Op::Link {
                target: p(&format!("{T}/lun/lun_1")),
                link: p(&format!("{T}/acls/{INI}/lun_1/{BS}")),
            },
        ]
    );
    assert!(drift(&have, &want).iter().any(|d| d.starts_with("LUN")));
}

#[test]
fn an_acl_no_longer_allowed_is_revoked_before_anything_is_granted() {
    let mut want = want();
    let have = made(&want);
    want.acls.clear();
    want.acls.insert("iqn.x".into(), None);
    want.chap_required = false;
    let ops = plan_converge(&have, &want, false);
    let revoke = ops
        .iter()
        .position(|o| *o == Op::Rmdir(p(&format!("{T}/acls/{INI}"))))
        .expect("revoked");
    let grant = ops
        .iter()
        .position(|o| *o == Op::Mkdir(p(&format!("{T}/acls/iqn.x"))))
        .expect("granted");
    assert!(revoke < grant, "{ops:#?}");
    assert_eq!(
        ops[..3],
        [
            w(&format!("{T}/attrib/authentication"), "0"),
            Op::Unlink(p(&format!("{T}/acls/{INI}/lun_1/{BS}"))),
            Op::Rmdir(p(&format!("{T}/acls/{INI}/lun_1"))),
        ]
    );
}

#[test]
fn changed_chap_credentials_are_written_again_and_never_shown() {
    let want = want();
    let mut have = made(&want);
    let acl = have
        .target
        .as_mut()
        .unwrap()
        .as_mut()
        .unwrap()
        .acls
        .get_mut(INI)
        .unwrap();
    acl.password = Some(Secret::new("tampered"));
    let ops = plan_converge(&have, &want, false);
    assert_eq!(
        ops,
        vec![Op::WriteSecret(
            p(&format!("{T}/acls/{INI}/auth/password")),
            Secret::new("s3cret-value")
        )]
    );
    let shown = format!("{:?} {} {:?}", ops, ops[0], drift(&have, &want));
    assert!(
        !shown.contains("s3cret") && !shown.contains("tampered"),
        "{shown}"
    );
    // An export without CHAP clears what an ACL holds.
    let mut no_chap = want.clone();
    no_chap.acls.insert(INI.into(), None);
    no_chap.chap_required = false;
    let ops = plan_converge(&made(&want), &no_chap, false);
    assert!(ops.contains(&w(&format!("{T}/acls/{INI}/auth/userid"), "NULL")));
}

#[test]
fn unmap_attributes_and_portals_are_brought_back() {
    let want = want();
    let mut have = made(&want);
    have.backstore.as_mut().unwrap().unmap = None;
    let tpg = have.target.as_mut().unwrap().as_mut().unwrap();
    tpg.portals = ["127.0.0.1:3260".to_string()].into();
    let bs = format!("core/fileio_0/{BS}");
    assert_eq!(
        plan_converge(&have, &want, false),
        vec![
            w(&format!("{bs}/attrib/emulate_tpu"), "1"),
            w(&format!("{bs}/attrib/emulate_tpws"), "1"),
            Op::Rmdir(p(&format!("{T}/np/127.0.0.1:3260"))),
            Op::Mkdir(p(&format!("{T}/np/0.0.0.0:3260"))),
        ]
    );
    let d = drift(&have, &want);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[0].contains("emulate_tpu"), "{d:?}");
}

#[test]
fn a_resized_file_remakes_backstore_lun_and_mappings_in_its_hba() {
    let mut want = want();
    let have = made(&want);
    want.size *= 2;
    let ops = plan_converge(&have, &want, false);
    let bs = format!("core/fileio_0/{BS}");
    assert_eq!(
        ops[..6],
        [
            Op::Unlink(p(&format!("{T}/acls/{INI}/lun_1/{BS}"))),
            Op::Rmdir(p(&format!("{T}/acls/{INI}/lun_1"))),
            Op::Unlink(p(&format!("{T}/lun/lun_1/{BS}"))),
            Op::Rmdir(p(&format!("{T}/lun/lun_1"))),
            Op::Rmdir(p(&bs)),
            Op::Mkdir(p(&bs)),
        ]
    );
    assert!(ops.contains(&w(&format!("{bs}/control"), "fd_dev_size=134217728")));
    // The unmap attributes are set again on the new backstore, before its LUN is linked.
    let tpu = ops
        .iter()
        .position(|o| *o == w(&format!("{bs}/attrib/emulate_tpu"), "1"))
        .unwrap();
    let link = ops
        .iter()
        .position(|o| matches!(o, Op::Link { target, .. } if *target == p(&bs)))
        .unwrap();
    assert!(tpu < link);
    assert!(ops.contains(&Op::Mkdir(p(&format!("{T}/acls/{INI}/lun_1")))));
    // A size that cannot be read back is re-made only when a resize says so.
    let mut unread = made(&want);
    unread.backstore.as_mut().unwrap().size = None;
    assert_eq!(plan_converge(&unread, &want, false), vec![]);
    assert!(!plan_converge(&unread, &want, true).is_empty());
}

#[test]
fn remove_takes_links_then_directories_bottom_up() {
    let want = want();
    let ops = plan_remove(&made(&want), IQN, BS);
    assert_eq!(
        ops,
        vec![
            Op::Unlink(p(&format!("{T}/acls/{INI}/lun_1/{BS}"))),
            Op::Rmdir(p(&format!("{T}/acls/{INI}/lun_1"))),
            Op::Unlink(p(&format!("{T}/lun/lun_1/{BS}"))),
            Op::Rmdir(p(&format!("{T}/lun/lun_1"))),
            Op::Rmdir(p(&format!("{T}/acls/{INI}"))),
            Op::Rmdir(p(&format!("{T}/np/0.0.0.0:3260"))),
            Op::Rmdir(p(T)),
            Op::Rmdir(p("iscsi/iqn.2026-11.org.example.shelf:vol")),
            Op::Rmdir(p(&format!("core/fileio_0/{BS}"))),
            Op::Rmdir(p("core/fileio_0")),
        ]
    );
    assert_eq!(plan_remove(&State::default(), IQN, BS), vec![]);
    // An HBA holding another backstore stays.
    let mut shared = made(&want);
    shared.backstore.as_mut().unwrap().hba_alone = false;
    assert!(!plan_remove(&shared, IQN, BS).contains(&Op::Rmdir(p("core/fileio_0"))));
}

#[test]
fn a_half_made_backstore_is_configured_in_place() {
    let want = want();
    let mut have = made(&want);
    let b = have.backstore.as_mut().unwrap();
    (b.enabled, b.udev_path, b.size, b.unmap) = (false, String::new(), None, Some(false));
    let ops = plan_converge(&have, &want, false);
    let bs = format!("core/fileio_0/{BS}");
    assert_eq!(
        ops[0],
        w(
            &format!("{bs}/control"),
            "fd_dev_name=/pool/shares/5f1c/volume"
        )
    );
    assert!(!ops.contains(&Op::Rmdir(p(&bs))), "{ops:#?}");
    assert_eq!(
        drift(&have, &want),
        vec!["backstore not enabled".to_string()]
    );
}

#[test]
fn portals_listen_on_every_address_of_the_family() {
    assert_eq!(
        listen_portal("127.0.0.1:3260".parse().unwrap()),
        "0.0.0.0:3260"
    );
    assert_eq!(listen_portal("[::1]:3261".parse().unwrap()), "[::]:3261");
}
