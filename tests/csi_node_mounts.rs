//! The CSI Node service over its real gRPC socket: the real `shelf-csi --mode node`
//! (tests/common/csi.rs, tests/common/csi_node.rs) doing real mounts in scratch directories.
//!
//! This machine's kernel has no iSCSI or NVMe/TCP initiator and no NFS client (no
//! CONFIG_NFS_FS, no modules), so no volume can be attached here: the real iSCSI, NVMe and
//! NFS stages run in the VM tier (tests/vm.rs).
//! Here: publish, stats and unpublish of volumes the test stages by hand, as stage leaves
//! them (a tmpfs on the staging path, a real loop device bind-mounted on
//! `<staging>/block`): the tests say `hand_staged` in their names.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::volume_usage::Unit;
use bpfman_csi::v1::*;
use common::csi_node::*;
use common::proc::sh;
use tonic::Code;

#[test]
fn publish_of_a_hand_staged_filesystem_binds_it_rw_and_ro_and_reports_stats() {
    let mut s = Scratch::new("csi-node-publish");
    let csi = plain_node("node-publish", &s);
    let mut node = csi.node.clone();
    let staging = s.tmpfs("staging", "16m");
    let st = staging.to_string_lossy().into_owned();
    let (rw_t, ro_t) = (s.path("pod-rw"), s.path("pod-ro"));
    let cap = || mount_cap(Mode::SingleNodeWriter, "", &[]);
    // A mount without this node's stage record is not a volume to publish.
    let e = csi
        .block_on(node.node_publish_volume(publish_req("a1:v1", &st, &s.s("pod-rw"), cap(), false)))
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(!rw_t.exists());
    write_stage_record(
        &s,
        &serde_json::json!({
            "volume_id": "a1:v1",
            "staging_path": st,
            "transport": {"protocol": "nfs", "export": "192.0.2.1:/shelf/v1"},
            "presented": {"type": "mount", "fs_type": "nfs4", "flags": []},
            "read_only": false,
        }),
    );
    // Staged, but the CO names another staging path (a tmpfs there too).
    let other = s.tmpfs("other-staging", "1m");
    let e = csi
        .block_on(node.node_publish_volume(publish_req(
            "a1:v1",
            &other.to_string_lossy(),
            &s.s("pod-rw"),
            cap(),
            false,
        )))
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("is staged at"), "{}", e.message());
    for _ in 0..2 {
        csi.block_on(node.node_publish_volume(publish_req(
            "a1:v1",
            &st,
            &s.s("pod-rw"),
            cap(),
            false,
        )))
        .unwrap();
        s.track(&rw_t);
    }
    assert!(!mounted_ro(&rw_t));
    std::fs::write(rw_t.join("written-through-target"), b"x").unwrap();
    assert!(
        staging.join("written-through-target").exists(),
        "the target is the staged filesystem"
    );

    csi.block_on(node.node_publish_volume(publish_req("a1:v1", &st, &s.s("pod-ro"), cap(), true)))
        .unwrap();
    s.track(&ro_t);
    assert!(
        mounted_ro(&ro_t),
        "readonly publish is a read-only mount in mountinfo"
    );
    let e = std::fs::write(ro_t.join("nope"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert!(!mounted_ro(&staging), "the staging mount stays writable");
    // A reader-only access mode is read-only too; the other flag on a published target is
    // ALREADY_EXISTS.
    let e = csi
        .block_on(node.node_publish_volume(publish_req("a1:v1", &st, &s.s("pod-rw"), cap(), true)))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let reader = mount_cap(Mode::MultiNodeReaderOnly, "", &[]);
    csi.block_on(node.node_publish_volume(publish_req(
        "a1:v1",
        &st,
        &s.s("pod-reader"),
        reader,
        false,
    )))
    .unwrap();
    s.track(&s.path("pod-reader"));
    assert!(mounted_ro(&s.path("pod-reader")));

    // Stats of the published target: the tmpfs's 16 MiB, bytes and inodes.
    let st_resp = csi
        .block_on(node.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "a1:v1".into(),
            volume_path: s.s("pod-rw"),
            staging_target_path: st.clone(),
        }))
        .unwrap()
        .into_inner();
    let bytes = st_resp
        .usage
        .iter()
        .find(|u| u.unit == Unit::Bytes as i32)
        .expect("bytes");
    let inodes = st_resp
        .usage
        .iter()
        .find(|u| u.unit == Unit::Inodes as i32)
        .expect("inodes");
    assert_eq!(bytes.total, 16 << 20, "{bytes:?}");
    assert!(
        bytes.used > 0 && bytes.used + bytes.available <= bytes.total,
        "{bytes:?}"
    );
    assert!(inodes.total > 0 && inodes.used >= 2, "{inodes:?}");
    assert_eq!(st_resp.volume_condition.map(|c| c.abnormal), Some(false));

    for t in ["pod-rw", "pod-ro", "pod-reader"] {
        for _ in 0..2 {
            csi.block_on(node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: "a1:v1".into(),
                target_path: s.s(t),
            }))
            .unwrap();
        }
        assert!(
            mount_entry(&s.path(t)).is_none() && !s.path(t).exists(),
            "{t}"
        );
    }
    assert!(
        staging.join("written-through-target").exists(),
        "unpublish leaves the staged data"
    );
}

#[test]
fn block_publish_of_a_hand_staged_loop_device() {
    let mut s = Scratch::new("csi-node-block");
    let csi = plain_node("node-block", &s);
    let mut node = csi.node.clone();
    let dev = s.loop_device(32 << 20);
    // As a block stage leaves it: the device bind-mounted on <staging>/block.
    let staging = s.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let held = staging.join("block");
    std::fs::File::create(&held).unwrap();
    sh(&["mount", "--bind", &dev, &held.to_string_lossy()]);
    s.track(&held);
    let st = staging.to_string_lossy().into_owned();
    write_stage_record(
        &s,
        &serde_json::json!({
            "volume_id": "a1:b1",
            "staging_path": st,
            "transport": {"protocol": "iscsi", "portal": "127.0.0.1:3260",
                          "iqn": "iqn.2026-01.io.shelf:b1", "lun": 1},
            "presented": {"type": "block"},
            "read_only": false,
            "device": dev,
        }),
    );
    let rdev = std::fs::metadata(&dev).unwrap().rdev();
    let cap = || block_cap(Mode::SingleNodeWriter);
    for _ in 0..2 {
        csi.block_on(node.node_publish_volume(publish_req(
            "a1:b1",
            &st,
            &s.s("dev-rw"),
            cap(),
            false,
        )))
        .unwrap();
        s.track(&s.path("dev-rw"));
    }
    let meta = std::fs::metadata(s.path("dev-rw")).unwrap();
    assert!(meta.file_type().is_block_device());
    assert_eq!(meta.rdev(), rdev, "the target is the staged device");
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.path("dev-rw"))
        .unwrap();

    csi.block_on(node.node_publish_volume(publish_req("a1:b1", &st, &s.s("dev-ro"), cap(), true)))
        .unwrap();
    s.track(&s.path("dev-ro"));
    assert!(mounted_ro(&s.path("dev-ro")));
    // A device node ignores its mount's ro flag: the plugin published a read-only loop
    // device over the staged one, which refuses writes.
    let ro_meta = std::fs::metadata(s.path("dev-ro")).unwrap();
    assert!(ro_meta.file_type().is_block_device());
    let sys = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(ro_meta.rdev()),
        libc::minor(ro_meta.rdev())
    ));
    assert_eq!(std::fs::read_to_string(sys.join("ro")).unwrap().trim(), "1");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(s.path("dev-ro"))
        .unwrap();
    let e = std::io::Write::write_all(&mut f, &[0u8; 4096]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    drop(f);

    // Mount access to a volume staged for block access: ALREADY_EXISTS (its record says
    // block), nothing mounted.
    let e = csi
        .block_on(node.node_publish_volume(publish_req(
            "a1:b1",
            &st,
            &s.s("dir"),
            mount_cap(Mode::SingleNodeWriter, "", &[]),
            false,
        )))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(!s.path("dir").exists());

    let stats = csi
        .block_on(node.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "a1:b1".into(),
            volume_path: s.s("dev-rw"),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage.len(), 1);
    assert_eq!(stats.usage[0].unit, Unit::Bytes as i32);
    assert_eq!(stats.usage[0].total, 32 << 20);

    for t in ["dev-rw", "dev-ro"] {
        csi.block_on(node.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "a1:b1".into(),
            target_path: s.s(t),
        }))
        .unwrap();
        assert!(!s.path(t).exists(), "{t}");
    }
    assert!(!sys.join("loop").exists(), "the read-only loop is detached");
    assert!(mount_entry(&held).is_some(), "the staged device stays");
    assert_eq!(std::fs::metadata(&held).unwrap().rdev(), rdev);
}
