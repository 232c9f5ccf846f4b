//! The CSI Node service over its real gRPC socket: the real `shelf-csi --mode node`
//! (tests/common/csi.rs, tests/common/csi_node.rs) doing real mounts in scratch directories.
//!
//! This machine's kernel has no iSCSI or NVMe/TCP initiator and no NFS client (no
//! CONFIG_NFS_FS, no modules), so no volume can be attached here: the real iSCSI, NVMe and
//! NFS stages run in the VM tier (tests/vm.rs).
//! Here: the stage bookkeeping up to what this machine cannot do (the NFS mount, iscsiadm),
//! and the CHAP secret across the controller's publish and the node's stage.

mod common;

use std::collections::HashMap;

use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::*;
use common::csi::{Csi, Spec};
use common::csi_node::*;
use common::{field, n, sub, t};
use tonic::Code;

/// A failed stage is undone: the NFS mount this kernel refuses (no NFS client) fails
/// naming the mount argv and its stderr, and leaves no record behind (the path is free for
/// another volume at once, and an unstage has nothing to do).
#[test]
fn a_failed_nfs_stage_names_the_mount_and_leaves_no_record() {
    let s = Scratch::new("csi-node-nfs");
    let csi = plain_node("node-nfs", &s);
    let mut node = csi.node.clone();
    let st = s.s("staging");
    let pc = map(&[("protocol", "nfs"), ("nfs_export", "127.0.0.1:/shelf/v1")]);
    let e = csi
        .block_on(node.node_stage_volume(nfs_stage("a1:n1", &st, &pc, &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    let m = e.message();
    assert!(
        m.contains("mount -t nfs4 -o vers=4.2,retry=0 -- 127.0.0.1:/shelf/v1"),
        "{m}"
    );
    assert!(m.contains("exit status") && m.contains("stderr"), "{m}");
    assert!(!m.contains("undoing"), "the undo itself worked: {m}");
    assert!(mount_entry(&s.path("staging")).is_none());
    assert_eq!(
        std::fs::read_dir(s.path("state/volumes")).unwrap().count(),
        0,
        "the failed stage forgot its record"
    );
    // The path is free again: another volume gets as far as the mount.
    let e = csi
        .block_on(node.node_stage_volume(nfs_stage("a1:n2", &st, &pc, &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
}

fn nfs_stage(
    id: &str,
    path: &str,
    pc: &HashMap<String, String>,
    flags: &[&str],
) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: path.into(),
        volume_capability: mount_cap(Mode::MultiNodeMultiWriter, "", flags),
        publish_context: pc.clone(),
        ..Default::default()
    }
}

/// Stage's bookkeeping on a live stage (an NFS one, as its record and mount would be: the
/// record written as the node writes it, a tmpfs standing for the NFS mount this kernel
/// cannot make): a repeat is OK; the volume elsewhere is FAILED_PRECONDITION; another
/// volume on the path or other flags ALREADY_EXISTS, also after a restart of the plugin;
/// unstage unmounts and forgets it, twice.
#[test]
fn a_live_stage_answers_repeats_and_conflicts_from_its_record() {
    let mut s = Scratch::new("csi-node-live");
    let st = s.tmpfs("staging", "1m");
    let st = st.to_string_lossy().into_owned();
    let pc = map(&[("protocol", "nfs"), ("nfs_export", "127.0.0.1:/shelf/v1")]);
    write_stage_record(
        &s,
        &serde_json::json!({
            "volume_id": "a1:n1",
            "staging_path": st,
            "transport": {"protocol": "nfs", "export": "127.0.0.1:/shelf/v1"},
            "presented": {"type": "mount", "fs_type": "nfs4", "flags": ["retry=0"]},
            "read_only": false,
        }),
    );
    let csi = plain_node("node-live", &s);
    let mut node = csi.node.clone();
    csi.block_on(node.node_stage_volume(nfs_stage("a1:n1", &st, &pc, &["retry=0"])))
        .expect("a repeat of a live stage is OK");
    let e = csi
        .block_on(node.node_stage_volume(nfs_stage("a1:n1", &s.s("elsewhere"), &pc, &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = csi
        .block_on(node.node_stage_volume(nfs_stage("a1:n1", &st, &pc, &["noatime"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    // The record outlives the plugin: a restarted one still knows what is staged there.
    drop(node);
    drop(csi);
    let csi = plain_node("node-live-restarted", &s);
    let mut node = csi.node.clone();
    let e = csi
        .block_on(node.node_stage_volume(nfs_stage("a1:n2", &st, &pc, &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    for _ in 0..2 {
        csi.block_on(node.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: "a1:n1".into(),
            staging_target_path: st.clone(),
        }))
        .unwrap();
    }
    assert!(
        mount_entry(std::path::Path::new(&st)).is_none(),
        "unmounted"
    );
    assert_eq!(
        std::fs::read_dir(s.path("state/volumes")).unwrap().count(),
        0,
        "the record is gone"
    );
}

/// A failed iSCSI stage leaves nothing behind and its unstage still works. On a machine
/// without iscsiadm (this one; the VM tier has it) the failure is FAILED_PRECONDITION
/// naming the program; with iscsiadm the login to a portal where nothing listens fails
/// instead (and its node record is deleted again): either way the test asserts the
/// bookkeeping, never passes silently.
#[test]
fn a_failed_iscsi_stage_leaves_no_record_and_unstage_still_works() {
    let s = Scratch::new("csi-node-noiscsi");
    let csi = plain_node("node-noiscsi", &s);
    let mut node = csi.node.clone();
    let req = NodeStageVolumeRequest {
        volume_id: "a1:i1".into(),
        staging_target_path: s.s("staging"),
        volume_capability: mount_cap(Mode::SingleNodeWriter, "", &[]),
        publish_context: map(&[
            ("protocol", "iscsi"),
            // Port 1 (tcpmux): nothing listens there on a test machine.
            ("target_portal", "127.0.0.1:1"),
            ("target_iqn", "iqn.2026-01.io.shelf.test:i1"),
            ("target_lun", "1"),
        ]),
        ..Default::default()
    };
    let e = csi.block_on(node.node_stage_volume(req)).unwrap_err();
    if installed("iscsiadm") {
        assert_ne!(e.code(), Code::Ok, "{e:?}");
        assert!(e.message().contains("iscsiadm"), "{}", e.message());
    } else {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("iscsiadm is not installed"),
            "{}",
            e.message()
        );
        assert!(
            csi.log_text().contains("missing: "),
            "the start-up line names what is missing"
        );
    }
    assert_eq!(
        std::fs::read_dir(s.path("state/volumes")).unwrap().count(),
        0,
        "the failed stage forgot its record"
    );
    csi.block_on(node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: "a1:i1".into(),
        staging_target_path: s.s("staging"),
    }))
    .unwrap();
}

/// The CHAP path across both services: the real controller publishes a real iSCSI share
/// (shelfd, tgtd) to this node's id and seals the secret; NodeStageVolume opens it with
/// the same `chapKey` (it gets as far as the missing iscsiadm), refuses another key with
/// PERMISSION_DENIED and no key with INVALID_ARGUMENT, and never logs the secret.

#[test]
fn stage_opens_the_controllers_sealed_chap_secret_only_with_its_key() {
    let s = Scratch::new("csi-node-chap");
    std::fs::write(
        s.path("initiatorname.iscsi"),
        format!("InitiatorName={IQN}\n"),
    )
    .unwrap();
    let extra = format!(
        "\n[node]\nname = \"w1\"\nip = \"127.0.0.1\"\nkubelet_dir = {:?}\nstate_dir = {:?}\ninitiator_file = {:?}\nhostnqn_file = {:?}\n",
        s.dir.path(),
        s.s("state"),
        s.s("initiatorname.iscsi"),
        s.s("no-hostnqn")
    );
    let csi = Csi::start(
        "node-chap",
        Spec {
            sizes: &[1 << 30],
            mode: "all",
            shelfd_extra: "",
            plugin_extra: &extra,
        },
    );
    let mut node = csi.node.clone();
    let mut ctl = csi.controller.clone();
    let node_id = csi
        .block_on(node.node_get_info(NodeGetInfoRequest {}))
        .unwrap()
        .into_inner()
        .node_id;
    let d = &csi.appliance("a1").rig.d;
    let meta = ciborium::Value::Map(vec![
        (t("csi.name"), t("pvc-chap")),
        (t("csi.protocol"), t("iscsi")),
    ]);
    let share = d.ok(
        "share.create",
        vec![
            ("name", t("pvc-chap")),
            ("size", n(1 << 20)),
            ("metadata", meta),
        ],
    );
    let vol = format!("a1:{}", field(sub(&share, "share"), "id"));
    let key = "the-publish-and-stage-key";
    let secrets = |k: &str| HashMap::from([("chapKey".to_string(), k.to_string())]);
    let ctx = csi
        .block_on(
            ctl.controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: vol.clone(),
                node_id: node_id.clone(),
                volume_capability: block_cap(Mode::SingleNodeWriter),
                secrets: secrets(key),
                ..Default::default()
            }),
        )
        .unwrap()
        .into_inner()
        .publish_context;
    assert!(ctx.contains_key("chap_secret_sealed"), "{ctx:?}");
    let stage = |sec: HashMap<String, String>| NodeStageVolumeRequest {
        volume_id: vol.clone(),
        staging_target_path: s.s("staging"),
        volume_capability: mount_cap(Mode::SingleNodeWriter, "", &[]),
        publish_context: ctx.clone(),
        secrets: sec,
        ..Default::default()
    };
    // The seal is opened before anything is attached: these hold with or without
    // iscsiadm.
    let e = csi
        .block_on(node.node_stage_volume(stage(secrets("another-key-of-some-length"))))
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = csi
        .block_on(node.node_stage_volume(stage(HashMap::new())))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    if installed("iscsiadm") {
        // With the right key a machine with iscsiadm would really log in: that is the
        // VM tier's test (tests/vm/csi). Say so where the output shows it: straight to
        // stderr, which the test harness does not capture (it captures only the print
        // macros), so the skip is visible in every run.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED part of stage_opens_the_controllers_sealed_chap_secret_only_with_its_key: \
             iscsiadm is installed, the right-key login is the VM tier's"
        );
    } else {
        let e = csi
            .block_on(node.node_stage_volume(stage(secrets(key))))
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::FailedPrecondition,
            "opened, then no iscsiadm: {e:?}"
        );
        assert!(e.message().contains("iscsiadm"), "{}", e.message());
    }
    assert!(!csi.log_text().contains(key), "the key is never logged");
    csi.block_on(node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: vol.clone(),
        staging_target_path: s.s("staging"),
    }))
    .unwrap();
}

/// When undoing a failed stage fails too, the error says so and carries both causes
/// (STYLE rule 15): a block stage whose attach fails, with a file holding data at
/// `<staging>/block` that the undo will not remove (it removes only what it would have
/// made).
#[test]
fn a_failed_undo_reports_both_causes() {
    let s = Scratch::new("csi-node-undo");
    let csi = plain_node("node-undo", &s);
    let mut node = csi.node.clone();
    std::fs::create_dir_all(s.path("staging")).unwrap();
    std::fs::write(s.path("staging/block"), b"not ours").unwrap();
    let req = NodeStageVolumeRequest {
        volume_id: "a1:u1".into(),
        staging_target_path: s.s("staging"),
        volume_capability: block_cap(Mode::SingleNodeWriter),
        publish_context: map(&[
            ("protocol", "iscsi"),
            ("target_portal", "127.0.0.1:1"),
            ("target_iqn", "iqn.2026-01.io.shelf.test:u1"),
            ("target_lun", "1"),
        ]),
        ..Default::default()
    };
    let e = csi.block_on(node.node_stage_volume(req)).unwrap_err();
    let m = e.message();
    assert!(m.contains("iscsiadm"), "the first cause: {m}");
    assert!(
        m.contains("undoing the stage failed too") && m.contains("left alone"),
        "the second cause: {m}"
    );
    assert_eq!(std::fs::read(s.path("staging/block")).unwrap(), b"not ours");
}
