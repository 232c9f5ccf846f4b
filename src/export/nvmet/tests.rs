//! The plans against configfs states, and the driver on a plain directory (not configfs).

use super::*;
use crate::model::{Access, Attached, Export, ExportOptions, Protocol, ShareState};

const SHARE: &str = "0b9f3c1e-7a52-4d7e-9d1c-3f5e2a8b6c4d";
const NQN: &str = "nqn.2026-12.io.shelf:vol1";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3ccabcd";

fn spec(hosts: &[&str]) -> ExportSpec {
    ExportSpec {
        export: Export {
            id: "e".into(),
            share: SHARE.into(),
            share_name: "vol1".into(),
            protocol: Protocol::Nvme,
            driver: Driver::Nvmet,
            state: ShareState::Available,
            options: ExportOptions {
                chap: false,
                ..ExportOptions::default()
            },
            target: NQN.into(),
            tid: None,
            fsid: None,
            chap_user: None,
            attached: hosts
                .iter()
                .map(|h| Attached {
                    client: h.to_string(),
                    mode: Access::Rw,
                })
                .collect(),
            created_at: 0,
        },
        path: "/srv/pool/vol1/volume".into(),
        chap_secret: None,
        thin: true,
        backing: Default::default(),
    }
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn an_export_from_nothing_is_reachable_only_once_complete() {
    let want = desired(&spec(&[HOST])).unwrap();
    assert_eq!(want.serial, "0b9f3c1e7a524d7e9d1c");
    let ops = plan_converge(None, &want, 1);
    let s = format!("subsystems/{NQN}");
    let ns = format!("{s}/namespaces/1");
    assert_eq!(
        ops,
        vec![
            Op::Mkdir(p(&format!("hosts/{HOST}"))),
            Op::Mkdir(p(&s)),
            Op::Write(p(&format!("{s}/attr_allow_any_host")), "0".into()),
            Op::Write(
                p(&format!("{s}/attr_serial")),
                "0b9f3c1e7a524d7e9d1c".into()
            ),
            Op::Mkdir(p(&ns)),
            Op::Write(
                p(&format!("{ns}/device_path")),
                "/srv/pool/vol1/volume".into()
            ),
            Op::Write(p(&format!("{ns}/device_uuid")), SHARE.into()),
            Op::Write(p(&format!("{ns}/device_nguid")), SHARE.into()),
            Op::Write(p(&format!("{ns}/enable")), "1".into()),
            Op::Link {
                target: p(&format!("hosts/{HOST}")),
                link: p(&format!("{s}/allowed_hosts/{HOST}")),
            },
            Op::Link {
                target: p(&s),
                link: p(&format!("ports/1/subsystems/{NQN}")),
            },
        ]
    );
    assert!(grants(None, &want));
}

#[test]
fn a_matching_subsystem_needs_nothing() {
    let want = desired(&spec(&[HOST])).unwrap();
    assert!(plan_converge(Some(&want), &want, 1).is_empty());
    assert!(!grants(Some(&want), &want));
}

#[test]
fn revoking_a_host_drops_connected_controllers_through_the_port_link() {
    let have = desired(&spec(&[HOST, "nqn.2026-01.org.example:other"])).unwrap();
    let want = desired(&spec(&[HOST])).unwrap();
    assert!(!grants(Some(&have), &want));
    let s = format!("subsystems/{NQN}");
    assert_eq!(
        plan_converge(Some(&have), &want, 7),
        vec![
            Op::Unlink(p(&format!("ports/7/subsystems/{NQN}"))),
            Op::Unlink(p(&format!(
                "{s}/allowed_hosts/nqn.2026-01.org.example:other"
            ))),
            Op::Link {
                target: p(&s),
                link: p(&format!("ports/7/subsystems/{NQN}")),
            },
        ]
    );
}

#[test]
fn a_drifted_device_is_changed_while_disabled() {
    let want = desired(&spec(&[])).unwrap();
    let mut have = want.clone();
    have.allow_any_host = true;
    have.namespace.as_mut().unwrap().device_path = "/elsewhere".into();
    assert!(grants(Some(&have), &want));
    let ns = format!("subsystems/{NQN}/namespaces/1");
    assert_eq!(
        plan_converge(Some(&have), &want, 1),
        vec![
            Op::Write(
                p(&format!("subsystems/{NQN}/attr_allow_any_host")),
                "0".into()
            ),
            Op::Write(p(&format!("{ns}/enable")), "0".into()),
            Op::Write(
                p(&format!("{ns}/device_path")),
                "/srv/pool/vol1/volume".into()
            ),
            Op::Write(p(&format!("{ns}/device_uuid")), SHARE.into()),
            Op::Write(p(&format!("{ns}/device_nguid")), SHARE.into()),
            Op::Write(p(&format!("{ns}/enable")), "1".into()),
        ]
    );
    // A disabled namespace that is otherwise right is only enabled again.
    let mut off = want.clone();
    off.namespace.as_mut().unwrap().enabled = false;
    assert_eq!(
        plan_converge(Some(&off), &want, 1),
        vec![Op::Write(p(&format!("{ns}/enable")), "1".into())]
    );
    // The kernel prints ids in its own case: not a drift.
    let mut upper = want.clone();
    upper.namespace.as_mut().unwrap().uuid = SHARE.to_uppercase();
    assert!(plan_converge(Some(&upper), &want, 1).is_empty());
    assert!(in_line(Some(&upper), &want));
    // Nor is a serial the kernel made before shelf could give its own.
    let mut serial = want.clone();
    serial.serial = "1a2b3c4d5e6f7a8b".into();
    assert!(plan_converge(Some(&serial), &want, 1).is_empty());
    assert!(in_line(Some(&serial), &want));
    assert!(!in_line(Some(&off), &want) && !in_line(None, &want));
}

#[test]
fn teardown_goes_in_the_order_configfs_allows() {
    let have = desired(&spec(&[HOST])).unwrap();
    let s = format!("subsystems/{NQN}");
    assert_eq!(
        plan_remove(&have, 1),
        vec![
            Op::Unlink(p(&format!("ports/1/subsystems/{NQN}"))),
            Op::Write(p(&format!("{s}/namespaces/1/enable")), "0".into()),
            Op::Rmdir(p(&format!("{s}/namespaces/1"))),
            Op::Unlink(p(&format!("{s}/allowed_hosts/{HOST}"))),
            Op::Rmdir(p(&s)),
        ]
    );
    // Half made (no namespace, not on the port): only what exists is taken apart.
    let half = Subsystem {
        namespace: None,
        on_port: false,
        hosts: BTreeSet::new(),
        ..have
    };
    assert_eq!(plan_remove(&half, 1), vec![Op::Rmdir(p(&s))]);
}

#[test]
fn a_port_serving_others_is_not_rebound() {
    let want = Port::tcp("192.0.2.1:4420".parse().unwrap());
    assert_eq!(want.adrfam, "ipv4");
    let fresh = plan_port(None, &want, 3, 0).unwrap();
    assert_eq!(fresh[0], Op::Mkdir(p("ports/3")));
    assert_eq!(fresh[1], Op::Write(p("ports/3/addr_trtype"), "tcp".into()));
    assert_eq!(fresh.len(), 5);
    assert!(plan_port(Some(&want), &want, 3, 5).unwrap().is_empty());
    let other = Port::tcp("[::1]:4421".parse().unwrap());
    assert_eq!(other.adrfam, "ipv6");
    assert_eq!(plan_port(Some(&other), &want, 3, 0).unwrap().len(), 4);
    let e = plan_port(Some(&other), &want, 3, 2).unwrap_err();
    assert!(e.contains("port 3") && e.contains("nvme.port_id"), "{e}");
}

#[test]
fn names_that_are_not_one_path_component_are_refused() {
    let mut bad = spec(&["nqn.2026-01.org.example:../../x"]);
    assert!(desired(&bad).is_err());
    bad = spec(&[]);
    bad.export.target = "nqn.2026-12.io.shelf:a/b".into();
    assert!(desired(&bad).is_err());
}

#[test]
fn ownership_is_by_prefix_and_colon() {
    let x = NvmetExporter::new(
        "/x".into(),
        "nqn.2026-12.io.shelf",
        1,
        "127.0.0.1:4420".parse().unwrap(),
    );
    assert!(x.owns("nqn.2026-12.io.shelf:vol"));
    assert!(!x.owns("nqn.2026-12.io.shelfish:vol"));
    assert!(!x.owns("nqn.2026-12.io.other:vol"));
}

#[test]
fn only_unlinked_known_hosts_go() {
    let known: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let in_use: BTreeSet<String> = ["b", "z"].map(String::from).into();
    assert_eq!(unused_hosts(&known, &in_use), vec!["a", "c"]);
}
