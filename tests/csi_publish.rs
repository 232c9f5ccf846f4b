//! ControllerPublishVolume and ControllerUnpublishVolume through the real `shelf-csi` gRPC
//! socket against real shelfd appliances with a real tgtd (tests/common/csi.rs): the
//! publish context, the sealed CHAP secret opened with the key and used by a real iSCSI
//! initiator (libiscsi's `iscsi-inq`), the secret absent from the plugin's log, the context
//! and every process's argv, and every refusal's code.
#![allow(clippy::result_large_err)] // the helpers answer tonic's Status, as the RPCs do

mod common;

use std::collections::HashMap;

use bpfman_csi::v1::volume_capability::{
    access_mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use bpfman_csi::v1::{
    CapacityRange, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, VolumeCapability,
};
use ciborium::Value;
use common::csi::Csi;
use common::iscsi::inquiry;
use common::{field, n, sub, t, Daemon, Login};
use shelf::model::{Access, Attachment};
use tonic::Code;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// The value of `chapKey` in the (test's) Kubernetes Secret.
const KEY: &str = "the-publish-and-stage-key";

/// A node id as NodeGetInfo makes it for node `host` with an iSCSI initiator.
fn node_id(host: &str) -> String {
    format!("host={host};iqn={};ip=127.0.0.1", initiator(host))
}

fn initiator(host: &str) -> String {
    format!("iqn.2026-12.io.shelf.test:{host}")
}

/// A volume made by CreateVolume: `protocol`, `size` bytes, of capability `cap`; its id.
fn csi_volume(csi: &Csi, name: &str, protocol: &str, size: u64, cap: VolumeCapability) -> String {
    let mut c = csi.controller.clone();
    let req = CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: size as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        parameters: HashMap::from([("protocol".to_string(), protocol.to_string())]),
        ..Default::default()
    };
    let v = csi.block_on(c.create_volume(req)).unwrap().into_inner();
    v.volume.unwrap().volume_id
}

/// A capability of `mode` with block access.
fn block(mode: access_mode::Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

/// The usual single-node block capability.
fn block_rw() -> VolumeCapability {
    block(access_mode::Mode::SingleNodeWriter)
}

fn publish_req(volume: &str, node: &str, key: Option<&str>) -> ControllerPublishVolumeRequest {
    let secrets = key
        .map(|k| HashMap::from([("chapKey".to_string(), k.to_string())]))
        .unwrap_or_default();
    ControllerPublishVolumeRequest {
        volume_id: volume.into(),
        node_id: node.into(),
        volume_capability: Some(block_rw()),
        readonly: false,
        secrets,
        volume_context: HashMap::new(),
    }
}

fn publish(
    csi: &Csi,
    req: ControllerPublishVolumeRequest,
) -> Result<HashMap<String, String>, tonic::Status> {
    let mut c = csi.controller.clone();
    csi.block_on(c.controller_publish_volume(req))
        .map(|r| r.into_inner().publish_context)
}

fn unpublish(csi: &Csi, volume: &str, node: &str) -> Result<(), tonic::Status> {
    let mut c = csi.controller.clone();
    let req = ControllerUnpublishVolumeRequest {
        volume_id: volume.into(),
        node_id: node.into(),
        secrets: HashMap::new(),
    };
    csi.block_on(c.controller_unpublish_volume(req)).map(|_| ())
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> tonic::Status {
    r.expect_err("the call should have failed")
}

fn attachments(d: &Daemon) -> Vec<Attachment> {
    d.ok("attachment.list", vec![]).deserialized().unwrap()
}

/// The processes whose argv holds `needle`.
fn argv_holding(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(argv) = std::fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&argv).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// The pid of the plugin (the process whose argv names its config).
fn plugin_pid(csi: &Csi) -> String {
    let pids = argv_holding(&csi.config.display().to_string());
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0].split(':').next().unwrap().to_string()
}

/// The children of process `pid` (every thread's).
fn children(pid: &str) -> String {
    let mut all = String::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        all.push_str(&std::fs::read_to_string(task.path().join("children")).unwrap_or_default());
    }
    all.trim().to_string()
}

/// The plugin's own sealing code, as the node service opens the secret with it.
#[path = "../src/bin/shelf-csi/seal.rs"]
#[allow(dead_code)]
mod seal;

#[test]
fn iscsi_publish_seals_a_chap_secret_that_logs_in_and_unpublish_revokes_it() {
    let csi = Csi::controller("publish-iscsi", &[GIB]);
    let d = &csi.appliance("a1").rig.d;
    let vol = csi_volume(&csi, "pvc-1", "iscsi", MIB, block_rw());
    let node = node_id("n1");
    let ctx = publish(&csi, publish_req(&vol, &node, Some(KEY))).unwrap();
    assert_eq!(ctx["protocol"], "iscsi");
    assert_eq!(ctx["target_lun"], "1");
    assert_eq!(ctx["access_mode"], "rw");
    // A thin volume through tgt unmaps: shelf says so, and the plugin passes it on.
    assert_eq!(ctx["discard"], "true");
    let port = csi.appliance("a1").rig.tgtd.port;
    assert_eq!(ctx["target_portal"], format!("127.0.0.1:{port}"));
    let sealed = &ctx["chap_secret_sealed"];
    // Bound to the volume, the node, and the context's portal, target and user.
    let b = |volume_id, node_id| seal::Bound {
        volume_id,
        node_id,
        target_portal: &ctx["target_portal"],
        target_iqn: &ctx["target_iqn"],
        chap_user: &ctx["chap_user"],
    };
    let secret = seal::open(KEY, &b(&vol, &node), sealed).expect("the sealed secret opens");
    // The same secret shelfd hands out for this share's export.
    let share_id = vol.split_once(':').unwrap().1;
    let again = d.ok(
        "share.attach",
        vec![
            ("share", t(share_id)),
            (
                "connector",
                common::connector(&initiator("n1"), "127.0.0.1", "n1"),
            ),
            ("protocol", t("iscsi")),
        ],
    );
    let login = Login::from_reply(&again, &initiator("n1"));
    assert_eq!(login.password, secret.as_str());
    assert_eq!(login.user, ctx["chap_user"]);
    assert_eq!(login.iqn, ctx["target_iqn"]);
    // Nowhere in the clear: not in the context, the plugin's log, any process's argv;
    // and the controller runs no program at all.
    assert!(
        ctx.values().all(|v| !v.contains(secret.as_str())),
        "{ctx:?}"
    );
    assert!(!csi.log_text().contains(secret.as_str()));
    assert!(
        csi.log_text().contains("ControllerPublishVolume"),
        "{}",
        csi.log_text()
    );
    assert_eq!(argv_holding(secret.as_str()), Vec::<String>::new());
    assert_eq!(children(&plugin_pid(&csi)), "");
    // It does not open for another node or volume, or with another key, nor when the
    // context is edited to send the node to another portal or target.
    let n2 = node_id("n2");
    assert!(seal::open(KEY, &b(&vol, &n2), sealed).is_err());
    assert!(seal::open(KEY, &b("a1:other", &node), sealed).is_err());
    assert!(seal::open("another-key-of-some-length", &b(&vol, &node), sealed).is_err());
    let elsewhere = seal::Bound {
        target_portal: "10.6.6.6:3260",
        ..b(&vol, &node)
    };
    assert!(seal::open(KEY, &elsewhere, sealed).is_err());
    let other_target = seal::Bound {
        target_iqn: "iqn.2026-12.org.example:evil",
        ..b(&vol, &node)
    };
    assert!(seal::open(KEY, &other_target, sealed).is_err());

    // A real initiator logs in with it; with a wrong secret it is refused.
    let url = |secret: &str| {
        format!(
            "iscsi://{}%{secret}@{}/{}/1",
            ctx["chap_user"], ctx["target_portal"], ctx["target_iqn"]
        )
    };
    inquiry(&initiator("n1"), &url(&secret)).expect("login with the opened secret");
    let wrong = format!("{}x", secret.as_str());
    assert!(inquiry(&initiator("n1"), &url(&wrong)).is_err());

    // Publishing again to the same node: a context whose secret opens to the same one.
    let ctx2 = publish(&csi, publish_req(&vol, &node, Some(KEY))).unwrap();
    let sealed2 = &ctx2["chap_secret_sealed"];
    let b2 = seal::Bound {
        volume_id: &vol,
        node_id: &node,
        target_portal: &ctx2["target_portal"],
        target_iqn: &ctx2["target_iqn"],
        chap_user: &ctx2["chap_user"],
    };
    assert_eq!(seal::open(KEY, &b2, sealed2).unwrap(), secret);
    assert_eq!(attachments(d).len(), 1);

    // Single-attach: another node is FAILED_PRECONDITION.
    let e = code(publish(&csi, publish_req(&vol, &node_id("n2"), Some(KEY))));
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("n1"), "{}", e.message());
    // Even to a node id this plugin did not make (csi-sanity's "foo"): published
    // elsewhere comes first.
    let e = code(publish(&csi, publish_req(&vol, "foo", Some(KEY))));
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Unpublish: the attachment goes, the initiator is refused; again: OK.
    unpublish(&csi, &vol, &node).unwrap();
    assert!(attachments(d).is_empty());
    assert!(inquiry(&initiator("n1"), &url(&secret)).is_err());
    unpublish(&csi, &vol, &node).unwrap();
    // Now n2 may have it.
    publish(&csi, publish_req(&vol, &node_id("n2"), Some(KEY))).unwrap();
    assert!(!csi.log_text().contains(secret.as_str()));
}

#[test]
fn publish_refuses_with_the_right_codes_and_leaves_nothing_attached() {
    let csi = Csi::controller("publish-codes", &[GIB]);
    let d = &csi.appliance("a1").rig.d;
    let vol = csi_volume(&csi, "pvc-1", "iscsi", MIB, block_rw());
    let node = node_id("n1");

    // No chapKey while the export has CHAP: FAILED_PRECONDITION naming the secret, and
    // the attach it made is undone.
    let e = code(publish(&csi, publish_req(&vol, &node, None)));
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("chapKey"), "{}", e.message());
    assert!(attachments(d).is_empty(), "{:?}", attachments(d));
    let e = code(publish(&csi, publish_req(&vol, &node, Some("k3y-xyz"))));
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(!e.message().contains("k3y-xyz"), "{}", e.message());
    assert!(attachments(d).is_empty());

    // Read-only over iSCSI (Kubernetes sets it from the PV): attached read-write on shelf
    // (its only iSCSI mode), the node told `access_mode=ro` to enforce it.
    let mut ro = publish_req(&vol, &node, Some(KEY));
    ro.readonly = true;
    let ctx = publish(&csi, ro).unwrap();
    assert_eq!(ctx["access_mode"], "ro", "{ctx:?}");
    let held = attachments(d);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].mode, shelf::model::Access::Rw);
    // Again read-only: the same; read-write to the same node meanwhile: ALREADY_EXISTS
    // (published but incompatible), though shelf's attachment is read-write either way.
    let mut ro = publish_req(&vol, &node, Some(KEY));
    ro.readonly = true;
    assert_eq!(publish(&csi, ro).unwrap()["access_mode"], "ro");
    let e = code(publish(&csi, publish_req(&vol, &node, Some(KEY))));
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    unpublish(&csi, &vol, &node).unwrap();
    assert!(attachments(d).is_empty());
    // Unpublished, the read-only mark is gone: a read-write publish is fine.
    let ctx = publish(&csi, publish_req(&vol, &node, Some(KEY))).unwrap();
    assert_eq!(ctx["access_mode"], "rw");
    let mut ro = publish_req(&vol, &node, Some(KEY));
    ro.readonly = true;
    assert_eq!(code(publish(&csi, ro)).code(), Code::AlreadyExists);
    unpublish(&csi, &vol, &node).unwrap();
    assert!(attachments(d).is_empty());

    // Node ids this plugin did not make, unknown volumes: NOT_FOUND.
    for bad in ["n1", "host=*", "host=n1;iqn=IQN", "host=n1;rm=-rf"] {
        let e = code(publish(&csi, publish_req(&vol, bad, Some(KEY))));
        assert_eq!(e.code(), Code::NotFound, "{bad}: {e:?}");
    }
    let foreign = d.ok(
        "share.create",
        vec![("name", t("foreign")), ("size", n(MIB))],
    );
    let foreign = format!("a1:{}", field(sub(&foreign, "share"), "id"));
    for bad in [
        "a1:0b0e6f1c-9d2e-4c1a-8f00-123456789abc",
        "a9:0b0e6f1c-9d2e-4c1a-8f00-123456789abc",
        "nonsense",
        foreign.as_str(),
    ] {
        let e = code(publish(&csi, publish_req(bad, &node, Some(KEY))));
        assert_eq!(e.code(), Code::NotFound, "{bad}: {e:?}");
    }
    // Required fields: INVALID_ARGUMENT.
    let mut no_cap = publish_req(&vol, &node, Some(KEY));
    no_cap.volume_capability = None;
    assert_eq!(code(publish(&csi, no_cap)).code(), Code::InvalidArgument);
    assert_eq!(
        code(publish(&csi, publish_req("", &node, Some(KEY)))).code(),
        Code::InvalidArgument
    );
    assert_eq!(
        code(publish(&csi, publish_req(&vol, "", Some(KEY)))).code(),
        Code::InvalidArgument
    );
    // A node without an initiator for an iSCSI volume: FAILED_PRECONDITION.
    let e = code(publish(
        &csi,
        publish_req(&vol, "host=n1;ip=127.0.0.1", Some(KEY)),
    ));
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(attachments(d).is_empty());

    // NVMe/TCP: a node without a host NQN is FAILED_PRECONDITION; with one, shelf's
    // answer (this host's kernel has no nvmet: its reason, passed through).
    let nvme = csi_volume(&csi, "pvc-nvme", "nvme", MIB, block_rw());
    let e = code(publish(&csi, publish_req(&nvme, &node, None)));
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("NQN"), "{}", e.message());
    let with_nqn =
        format!("{node};nqn=nqn.2014-08.org.nvmexpress:uuid:0b0e6f1c-9d2e-4c1a-8f00-123456789abc")
            .replace(";ip=127.0.0.1", "")
            + ";ip=127.0.0.1";
    match publish(&csi, publish_req(&nvme, &with_nqn, None)) {
        Ok(ctx) => {
            assert_eq!(ctx["protocol"], "nvme");
            assert!(ctx.contains_key("target_nqn") && ctx.contains_key("nvme_port"));
        }
        Err(e) => {
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains("nvmet"), "{}", e.message());
        }
    }

    // Unpublish of what is not published: OK, whatever the ids.
    unpublish(&csi, &vol, &node).unwrap();
    unpublish(&csi, "nonsense", &node).unwrap();
    unpublish(&csi, "a1:0b0e6f1c-9d2e-4c1a-8f00-123456789abc", &node).unwrap();
    unpublish(&csi, &vol, "not-a-node-id").unwrap();
    assert_eq!(
        code(unpublish(&csi, "", &node)).code(),
        Code::InvalidArgument
    );
}

#[test]
fn multiattach_volumes_publish_to_many_and_unpublish_without_node_detaches_all() {
    let csi = Csi::controller("publish-multi", &[GIB]);
    let d = &csi.appliance("a1").rig.d;
    let multi = block(access_mode::Mode::MultiNodeMultiWriter);
    let vol = csi_volume(&csi, "pvc-m", "iscsi", MIB, multi);
    for host in ["n1", "n2", "n3"] {
        publish(&csi, publish_req(&vol, &node_id(host), Some(KEY))).unwrap();
    }
    assert_eq!(attachments(d).len(), 3);
    unpublish(&csi, &vol, &node_id("n2")).unwrap();
    let left: Vec<String> = attachments(d).into_iter().map(|a| a.host).collect();
    assert_eq!(left, ["n1", "n3"]);
    unpublish(&csi, &vol, "").unwrap();
    assert!(attachments(d).is_empty());
    // The volume deleted meanwhile: unpublish is OK.
    publish(&csi, publish_req(&vol, &node_id("n1"), Some(KEY))).unwrap();
    let share_id = vol.split_once(':').unwrap().1;
    d.ok(
        "share.delete",
        vec![("share", t(share_id)), ("force", Value::Bool(true))],
    );
    unpublish(&csi, &vol, &node_id("n1")).unwrap();
}

#[test]
fn nfs_volumes_publish_read_only_and_refuse_the_other_mode_on_the_same_node() {
    let csi = Csi::controller("publish-nfs", &[4 * GIB]);
    let d = &csi.appliance("a1").rig.d;
    let mount = VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "xfs".into(),
            ..Default::default()
        })),
    };
    let vol = csi_volume(&csi, "pvc-nfs", "nfs", 320 * MIB, mount);
    let share_id = vol.split_once(':').unwrap().1.to_string();
    let node = "host=n1;ip=127.0.0.1";
    let mut ro = publish_req(&vol, node, None);
    ro.readonly = true;
    let ctx = publish(&csi, ro.clone()).unwrap();
    assert_eq!(ctx["protocol"], "nfs");
    assert_eq!(ctx["access_mode"], "ro");
    assert_eq!(
        ctx["discard"], "false",
        "NFS connection_info has no discard"
    );
    assert!(ctx["nfs_export"].starts_with("127.0.0.1:/"), "{ctx:?}");
    assert!(ctx["nfs_export"].ends_with(&share_id), "{ctx:?}");
    let a = attachments(d);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].client.as_str(), a[0].mode), ("127.0.0.1", Access::Ro));
    assert!(!ctx.contains_key("chap_secret_sealed"));
    // The same again: OK; read-write on the same node: ALREADY_EXISTS.
    assert_eq!(publish(&csi, ro).unwrap(), ctx);
    let e = code(publish(&csi, publish_req(&vol, node, None)));
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    unpublish(&csi, &vol, node).unwrap();
    assert!(attachments(d).is_empty());
}
