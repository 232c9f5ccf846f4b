//! The CSI Node service over its real gRPC socket: the real `shelf-csi --mode node`
//! (tests/common/csi.rs) doing real mounts in scratch directories.
//!
//! This machine's kernel has no iSCSI or NVMe/TCP initiator and no NFS client (no
//! CONFIG_NFS_FS, no modules), so no volume can be attached here: the real iSCSI, NVMe and
//! NFS stages run in the VM tier (tests/vm.rs). What runs here for real: NodeGetInfo from
//! initiator files, the capabilities, every validation error, the stage bookkeeping up to
//! the NFS mount the kernel refuses, idempotent unpublish/unstage, and publish, stats and
//! unpublish of volumes the test stages by hand (a tmpfs on the staging path, a real loop
//! device bind-mounted on `<staging>/block`, as stage leaves them): the tests that do so
//! say `hand_staged` in their names.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use bpfman_csi::v1::node_service_capability::rpc::Type as Rpc;
use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use bpfman_csi::v1::volume_usage::Unit;
use bpfman_csi::v1::*;
use common::csi::{Csi, Spec, TOPOLOGY_KEY};
use common::proc::{sh, try_run};
use tonic::Code;

const IQN: &str = "iqn.2026-01.io.shelf.test:w1";
const NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6f1c2b9a-0d4e-4c1e-9a53-3d1a2b3c4d5e";

/// A node plugin whose `[node]` table is `extra` (no appliances).
fn node_plugin(tag: &str, extra: &str) -> Csi {
    Csi::start(
        tag,
        Spec {
            sizes: &[],
            mode: "node",
            shelfd_extra: "",
            plugin_extra: extra,
        },
    )
}

/// Scratch paths for a test, whose mounts are undone (last first) and loop devices
/// detached on drop, so a failing test leaves nothing mounted.
struct Scratch {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    loops: Vec<String>,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch {
            dir: common::world::scratch(tag),
            mounts: Vec::new(),
            loops: Vec::new(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
    /// Stage by hand what a mount-access stage leaves: a filesystem (a tmpfs) mounted on
    /// the staging path.
    fn tmpfs(&mut self, name: &str, size: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &p.to_string_lossy(),
        ]);
        self.mounts.push(p.clone());
        p
    }
    /// A real loop device over a sparse file of `size` bytes.
    fn loop_device(&mut self, size: u64) -> String {
        let img = self.path("disk.img");
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        let dev = sh(&["losetup", "--find", "--show", &img.to_string_lossy()])
            .trim()
            .to_string();
        self.loops.push(dev.clone());
        dev
    }
    /// Remember a mount the plugin made, in case the test fails before undoing it.
    fn track(&mut self, p: &Path) {
        self.mounts.push(p.to_path_buf());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            while mount_entry(m).is_some() {
                if !try_run(&["umount", &m.to_string_lossy()]).0 {
                    break;
                }
            }
        }
        for l in &self.loops {
            let _ = try_run(&["losetup", "-d", l]);
        }
    }
}

/// This process's mountinfo line for exactly `path`, split in fields (the last one).
fn mount_entry(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
        .rfind(|f| f.len() > 5 && f[4] == want)
}

/// Whether the mount at `path` is read-only, per mountinfo's per-mount options.
fn mounted_ro(path: &Path) -> bool {
    let e = mount_entry(path).unwrap_or_else(|| panic!("{} is not mounted", path.display()));
    e[5].split(',').any(|o| o == "ro")
}

fn mount_cap(mode: Mode, fs: &str, flags: &[&str]) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: flags.iter().map(|s| s.to_string()).collect(),
            volume_mount_group: String::new(),
        })),
    })
}

fn block_cap(mode: Mode) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    })
}

fn publish_req(
    id: &str,
    staging: &str,
    target: &str,
    cap: Option<VolumeCapability>,
    ro: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
        target_path: target.into(),
        volume_capability: cap,
        readonly: ro,
        ..Default::default()
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

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
        "\n[node]\nname = \"w1\"\nsegment = \"a1\"\nip = \"192.0.2.7\"\nstate_dir = {:?}\ninitiator_file = {:?}\nhostnqn_file = {:?}\n",
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
        "\n[node]\nname = \"w2\"\nstate_dir = {:?}\ninitiator_file = {:?}\nhostnqn_file = {:?}\n",
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

/// A node plugin named w1 keeping its state in `s`, with no initiator files.
fn plain_node(tag: &str, s: &Scratch) -> Csi {
    node_plugin(
        tag,
        &format!(
            "\n[node]\nname = \"w1\"\nstate_dir = {:?}\ninitiator_file = {:?}\nhostnqn_file = {:?}\n",
            s.s("state"),
            s.s("no-initiatorname"),
            s.s("no-hostnqn")
        ),
    )
}

#[test]
fn capabilities_are_stage_expand_stats_and_condition() {
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
    let e = csi
        .block_on(node.node_get_volume_stats(stats("rel")))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
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

#[test]
fn publish_of_a_hand_staged_filesystem_binds_it_rw_and_ro_and_reports_stats() {
    let mut s = Scratch::new("csi-node-publish");
    let csi = plain_node("node-publish", &s);
    let mut node = csi.node.clone();
    let staging = s.tmpfs("staging", "16m");
    let st = staging.to_string_lossy().into_owned();
    let (rw_t, ro_t) = (s.path("pod-rw"), s.path("pod-ro"));
    let cap = || mount_cap(Mode::SingleNodeWriter, "", &[]);
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

    // Mount access on a block-staged path is not staged: nothing is mounted there.
    let e = csi
        .block_on(node.node_publish_volume(publish_req(
            "a1:b1",
            &st,
            &s.s("dir"),
            mount_cap(Mode::SingleNodeWriter, "", &[]),
            false,
        )))
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

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

/// Stage's bookkeeping for real, up to the NFS mount, which this kernel refuses (no NFS
/// client): the failure names the mount argv and its stderr; the record it wrote first
/// makes a repeat elsewhere FAILED_PRECONDITION, another volume on the path or other
/// flags ALREADY_EXISTS, also after a restart of the plugin; unstage forgets it.
#[test]
fn nfs_stage_on_a_kernel_without_nfs_fails_naming_mount_and_unstage_cleans_up() {
    let s = Scratch::new("csi-node-nfs");
    let csi = plain_node("node-nfs", &s);
    let mut node = csi.node.clone();
    let st = s.s("staging");
    let pc = map(&[("protocol", "nfs"), ("nfs_export", "127.0.0.1:/shelf/v1")]);
    let stage = |id: &str, path: &str, flags: &[&str]| NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: path.into(),
        volume_capability: mount_cap(Mode::MultiNodeMultiWriter, "", flags),
        publish_context: pc.clone(),
        ..Default::default()
    };
    let e = csi
        .block_on(node.node_stage_volume(stage("a1:n1", &st, &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    let m = e.message();
    assert!(
        m.contains("mount -t nfs4 -o vers=4.2,retry=0 127.0.0.1:/shelf/v1"),
        "{m}"
    );
    assert!(m.contains("exit status") && m.contains("stderr"), "{m}");
    assert!(mount_entry(&s.path("staging")).is_none());

    let e = csi
        .block_on(node.node_stage_volume(stage("a1:n1", &s.s("elsewhere"), &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = csi
        .block_on(node.node_stage_volume(stage("a1:n2", &st, &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = csi
        .block_on(node.node_stage_volume(stage("a1:n1", &st, &["noatime"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    // The record outlives the plugin: a restarted one still knows what is staged there.
    drop(node);
    drop(csi);
    let csi = plain_node("node-nfs-restarted", &s);
    let mut node = csi.node.clone();
    let e = csi
        .block_on(node.node_stage_volume(stage("a1:n2", &st, &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    for _ in 0..2 {
        csi.block_on(node.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: "a1:n1".into(),
            staging_target_path: st.clone(),
        }))
        .unwrap();
    }
    assert_eq!(
        std::fs::read_dir(s.path("state/volumes")).unwrap().count(),
        0,
        "the record is gone"
    );
    // The path is free again: another volume gets as far as the mount.
    let e = csi
        .block_on(node.node_stage_volume(stage("a1:n2", &st, &["retry=0"])))
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
}
