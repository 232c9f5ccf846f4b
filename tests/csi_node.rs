//! The CSI Node service over its real gRPC socket: the real `shelf-csi --mode node`
//! (tests/common/csi.rs, tests/common/csi_node.rs) doing real mounts in scratch directories.
//!
//! This machine's kernel has no iSCSI or NVMe/TCP initiator and no NFS client (no
//! CONFIG_NFS_FS, no modules), so no volume can be attached here: the real iSCSI, NVMe and
//! NFS stages run in the VM tier (tests/vm.rs).
//! Here: NodeGetInfo from initiator files, the capabilities, every validation error, and
//! idempotent unpublish/unstage of what was never there. Publishes: csi_node_mounts.rs;
//! stages: csi_node_stage.rs.

mod common;

use std::collections::HashMap;
use std::path::Path;

use bpfman_csi::v1::node_service_capability::rpc::Type as Rpc;
use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::*;
use common::csi::TOPOLOGY_KEY;
use common::csi_node::*;
use tonic::Code;

#[test]
fn node_info_comes_from_the_config_and_the_initiator_files() {
    let s = Scratch::new("csi-node-info");
    std::fs::write(
        s.path("initiatorname.iscsi"),
        format!("## generated\nInitiatorName={IQN}\n"),
    )
    .unwrap();
    std::fs::write(s.path("hostnqn"), format!("{NQN}\n")).unwrap();
    let extra = format!(
        "\n[node]\nname = \"w1\"\nsegment = \"a1\"\nip = \"192.0.2.7\"\nkubelet_dir = {:?}\nstate_dir = {:?}\ninitiator_file = {:?}\nhostnqn_file = {:?}\n",
        s.dir.path(),
        s.s("state"),
        s.s("initiatorname.iscsi"),
        s.s("hostnqn")
    );
    let csi = node_plugin("node-info", &extra);
    let mut node = csi.node.clone();
    let info = csi
        .block_on(node.node_get_info(NodeGetInfoRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(
        info.node_id,
        format!("host=w1;iqn={IQN};nqn={NQN};ip=192.0.2.7")
    );
    assert_eq!(info.max_volumes_per_node, 0);
    let topo = info.accessible_topology.expect("a segment is configured");
    assert_eq!(topo.segments, map(&[(TOPOLOGY_KEY, "a1")]));

    // No files, no segment: only the host, no topology.
    let bare = format!(
        "\n[node]\nname = \"w2\"\nkubelet_dir = {:?}\nstate_dir = {:?}\ninitiator_file = {:?}\nhostnqn_file = {:?}\n",
        s.dir.path(),
        s.s("state2"),
        s.s("absent-1"),
        s.s("absent-2")
    );
    let csi = node_plugin("node-info-bare", &bare);
    let mut node = csi.node.clone();
    let info = csi
        .block_on(node.node_get_info(NodeGetInfoRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "host=w2");
    assert_eq!(info.accessible_topology, None);
}

#[test]
fn a_bad_initiator_file_stops_the_plugin_at_start() {
    let s = Scratch::new("csi-node-badini");
    std::fs::write(s.path("initiatorname.iscsi"), "InitiatorName=not an iqn\n").unwrap();
    let cfg = s.path("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nname = \"w1\"\ninitiator_file = {:?}\n",
            s.s("initiatorname.iscsi")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shelf-csi"))
        .args([
            "--mode",
            "node",
            "--endpoint",
            &s.s("csi.sock"),
            "--config",
            &cfg.to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("iqn") || err.contains("IQN") || err.contains("initiator"),
        "{err}"
    );
}

#[test]
fn capabilities_are_stage_expand_stats_condition_and_single_node_multi_writer() {
    let s = Scratch::new("csi-node-caps");
    let csi = plain_node("node-caps", &s);
    let mut node = csi.node.clone();
    let caps = csi
        .block_on(node.node_get_capabilities(NodeGetCapabilitiesRequest {}))
        .unwrap()
        .into_inner();
    let mut got: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|node_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    got.sort();
    let mut want = vec![
        Rpc::StageUnstageVolume as i32,
        Rpc::ExpandVolume as i32,
        Rpc::GetVolumeStats as i32,
        Rpc::VolumeCondition as i32,
        // The controller advertises it too (tests/csi_controller.rs): both must agree.
        Rpc::SingleNodeMultiWriter as i32,
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn every_malformed_request_gets_its_csi_code() {
    let s = Scratch::new("csi-node-invalid");
    let csi = plain_node("node-invalid", &s);
    let mut node = csi.node.clone();
    let st = s.s("staging");
    let tg = s.s("target");
    let rw = || mount_cap(Mode::SingleNodeWriter, "", &[]);
    let iscsi = map(&[
        ("protocol", "iscsi"),
        ("target_portal", "127.0.0.1:3260"),
        ("target_iqn", "iqn.2026-01.io.shelf:v1"),
        ("target_lun", "1"),
    ]);
    let stage = |id: &str,
                 path: &str,
                 cap: Option<VolumeCapability>,
                 pc: HashMap<String, String>| NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: path.into(),
        volume_capability: cap,
        publish_context: pc,
        ..Default::default()
    };
    let stages = [
        (stage("", &st, rw(), iscsi.clone()), "volume_id"),
        (
            stage("a1:v1", "", rw(), iscsi.clone()),
            "staging_target_path",
        ),
        (
            stage("a1:v1", "relative/path", rw(), iscsi.clone()),
            "staging_target_path",
        ),
        (
            stage("a1:v1", &format!("{st}/../x"), rw(), iscsi.clone()),
            "staging_target_path",
        ),
        (
            stage("a1:v1", &st, None, iscsi.clone()),
            "volume_capability",
        ),
        (
            stage(
                "a1:v1",
                &st,
                mount_cap(Mode::Unknown, "", &[]),
                iscsi.clone(),
            ),
            "access mode",
        ),
        (
            stage(
                "a1:v1",
                &st,
                mount_cap(Mode::SingleNodeWriter, "btrfs", &[]),
                iscsi.clone(),
            ),
            "btrfs",
        ),
        (
            stage(
                "a1:v1",
                &st,
                mount_cap(Mode::SingleNodeWriter, "", &["a,b"]),
                iscsi.clone(),
            ),
            "mount flag",
        ),
        (stage("a1:v1", &st, rw(), HashMap::new()), "protocol"),
        (stage("a1:v1", &st, rw(), map(&[("protocol", "fc")])), "fc"),
        (
            stage("a1:v1", &st, rw(), map(&[("protocol", "iscsi")])),
            "target_lun",
        ),
        (
            stage("a1:v1", &st, rw(), map(&[("protocol", "nfs")])),
            "nfs_export",
        ),
        (
            stage(
                "a1:v1",
                &st,
                block_cap(Mode::SingleNodeWriter),
                map(&[("protocol", "nfs"), ("nfs_export", "h:/e")]),
            ),
            "block access",
        ),
        (
            stage("a1:v1", &st, rw(), {
                let mut m = iscsi.clone();
                m.insert("chap_user".into(), "u".into());
                m.insert("chap_secret_sealed".into(), "v1.00".into());
                m
            }),
            "chapKey",
        ),
    ];
    for (req, want) in stages {
        let e = csi
            .block_on(node.node_stage_volume(req.clone()))
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
        assert!(e.message().contains(want), "{want}: {}", e.message());
    }
    assert!(
        !s.path("state").join("volumes").exists()
            || std::fs::read_dir(s.path("state/volumes")).unwrap().count() == 0
    );

    let publishes = [
        (publish_req("", &st, &tg, rw(), false), "volume_id"),
        (
            publish_req("a1:v1", "", &tg, rw(), false),
            "staging_target_path",
        ),
        (publish_req("a1:v1", &st, "", rw(), false), "target_path"),
        (publish_req("a1:v1", &st, "t", rw(), false), "target_path"),
        (
            publish_req("a1:v1", &st, &format!("{tg}/./x"), rw(), false),
            "target_path",
        ),
        (
            publish_req("a1:v1", &st, &tg, None, false),
            "volume_capability",
        ),
    ];
    for (req, want) in publishes {
        let e = csi
            .block_on(node.node_publish_volume(req.clone()))
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
        assert!(e.message().contains(want), "{want}: {}", e.message());
    }
    // Nothing staged at the staging path: FAILED_PRECONDITION.
    std::fs::create_dir_all(&st).unwrap();
    let e = csi
        .block_on(node.node_publish_volume(publish_req("a1:v1", &st, &tg, rw(), false)))
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        !Path::new(&tg).exists(),
        "no target made for a refused publish"
    );

    let e = csi
        .block_on(node.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "a1:v1".into(),
            target_path: "rel".into(),
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = csi
        .block_on(node.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: String::new(),
            staging_target_path: st.clone(),
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Stats: a path that is absent or not a mount is NOT_FOUND.
    let stats = |path: &str| NodeGetVolumeStatsRequest {
        volume_id: "a1:v1".into(),
        volume_path: path.into(),
        ..Default::default()
    };
    for path in [s.s("absent"), st.clone()] {
        let e = csi
            .block_on(node.node_get_volume_stats(stats(&path)))
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{path}: {e:?}");
    }
    // A relative path, or one outside the kubelet dir, names no volume here: NOT_FOUND
    // (csi-sanity's "volume not found" sends `some/path`); a missing one is INVALID_ARGUMENT.
    for path in ["rel", "some/path", "/etc"] {
        let e = csi
            .block_on(node.node_get_volume_stats(stats(path)))
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{path}: {e:?}");
    }
    let e = csi
        .block_on(node.node_get_volume_stats(stats("")))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = csi
        .block_on(node.node_expand_volume(NodeExpandVolumeRequest {
            volume_id: "a1:v1".into(),
            volume_path: "some/path".into(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // Expand of a volume not staged here: NOT_FOUND.
    let e = csi
        .block_on(node.node_expand_volume(NodeExpandVolumeRequest {
            volume_id: "a1:v1".into(),
            volume_path: tg.clone(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = csi
        .block_on(node.node_expand_volume(NodeExpandVolumeRequest {
            volume_id: String::new(),
            volume_path: tg.clone(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[test]
fn unpublish_and_unstage_of_what_was_never_there_succeed() {
    let s = Scratch::new("csi-node-idem");
    let csi = plain_node("node-idem", &s);
    let mut node = csi.node.clone();
    for _ in 0..2 {
        csi.block_on(node.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "a1:never".into(),
            target_path: s.s("never-target"),
        }))
        .unwrap();
        csi.block_on(node.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: "a1:never".into(),
            staging_target_path: s.s("never-staging"),
        }))
        .unwrap();
    }
    // An empty target directory left by a CO is removed.
    std::fs::create_dir_all(s.path("empty-target")).unwrap();
    csi.block_on(node.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: "a1:never".into(),
        target_path: s.s("empty-target"),
    }))
    .unwrap();
    assert!(!s.path("empty-target").exists());
}

/// The CO's paths are trusted only beneath `node.kubelet_dir` and without links: an
/// unpublish of a file outside it (`/etc/shadow` in the review) or of a link under it that
/// points outside is INVALID_ARGUMENT and removes nothing; a file with data under it is
/// left alone; a publish through a link or outside is refused before any mount.
#[test]
fn co_paths_outside_the_kubelet_dir_or_through_links_are_refused() {
    let outside = Scratch::new("csi-node-paths-outside");
    let victim = outside.path("shadow");
    std::fs::write(&victim, b"root:secret\n").unwrap();
    let mut s = Scratch::new("csi-node-paths");
    let csi = plain_node("node-paths", &s);
    let mut node = csi.node.clone();
    std::os::unix::fs::symlink(&victim, s.path("link")).unwrap();
    std::os::unix::fs::symlink(outside.dir.path(), s.path("dirlink")).unwrap();
    std::fs::write(s.path("data"), b"kept").unwrap();
    let unpublish = |t: String| NodeUnpublishVolumeRequest {
        volume_id: "a1:p1".into(),
        target_path: t,
    };
    for t in [
        victim.to_string_lossy().into_owned(),
        s.s("link"),
        s.s("dirlink/shadow"),
    ] {
        let e = csi
            .block_on(node.node_unpublish_volume(unpublish(t.clone())))
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{t}: {e:?}");
        assert!(e.message().contains("target_path"), "{}", e.message());
    }
    let e = csi
        .block_on(node.node_unpublish_volume(unpublish(s.s("data"))))
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(std::fs::read(s.path("data")).unwrap(), b"kept");
    assert_eq!(std::fs::read(&victim).unwrap(), b"root:secret\n");
    // A publish onto the link, or from a staging path outside, mounts nothing.
    let staging = s.tmpfs("staging", "1m");
    for (st, t) in [
        (staging.to_string_lossy().into_owned(), s.s("dirlink/t")),
        (outside.s("st"), s.s("t")),
    ] {
        let cap = mount_cap(Mode::SingleNodeWriter, "", &[]);
        let req = publish_req("a1:p1", &st, &t, cap, false);
        let e = csi.block_on(node.node_publish_volume(req)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    assert!(!outside.path("t").exists());
}
