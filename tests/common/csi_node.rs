//! The CSI Node tests' helpers (tests/csi_node*.rs): a node-only plugin with its state in a
//! scratch directory, scratch paths whose mounts and loop devices are undone in `Drop`,
//! mountinfo lookups, and request builders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use bpfman_csi::v1::{NodePublishVolumeRequest, VolumeCapability};

use super::csi::{Csi, Spec};
use super::proc::{sh, try_run};

/// Whether `program` is installed in the plugin's fixed directories (shelf's own list).
pub fn installed(program: &str) -> bool {
    shelf::sys::cmd::SEARCH_DIRS
        .iter()
        .any(|d| Path::new(d).join(program).exists())
}

/// The initiator IQN the tests give a node.
pub const IQN: &str = "iqn.2026-01.io.shelf.test:w1";
/// The host NQN the tests give a node.
pub const NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6f1c2b9a-0d4e-4c1e-9a53-3d1a2b3c4d5e";

/// A node plugin whose `[node]` table is `extra` (no appliances).
pub fn node_plugin(tag: &str, extra: &str) -> Csi {
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
pub struct Scratch {
    /// The scratch directory.
    pub dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    loops: Vec<String>,
}

impl Scratch {
    /// A scratch directory for `tag`.
    pub fn new(tag: &str) -> Scratch {
        Scratch {
            dir: super::world::scratch(tag),
            mounts: Vec::new(),
            loops: Vec::new(),
        }
    }
    /// A path in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A path in it, as text.
    pub fn s(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
    /// Stage by hand what a mount-access stage leaves: a filesystem (a tmpfs) mounted on
    /// the staging path.
    pub fn tmpfs(&mut self, name: &str, size: &str) -> PathBuf {
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
    pub fn loop_device(&mut self, size: u64) -> String {
        let img = self.path("disk.img");
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        let dev = sh(&["losetup", "--find", "--show", &img.to_string_lossy()])
            .trim()
            .to_string();
        self.loops.push(dev.clone());
        dev
    }
    /// Remember a mount the plugin made, in case the test fails before undoing it.
    pub fn track(&mut self, p: &Path) {
        self.mounts.push(p.to_path_buf());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Loops the plugin made over something in here (a read-only block publish a
        // failing test never unpublished) hold their mounts busy: detach them first.
        let root = self.dir.path().to_string_lossy().into_owned();
        for e in std::fs::read_dir("/sys/block")
            .into_iter()
            .flatten()
            .flatten()
        {
            let backing =
                std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            if backing.starts_with(&root) {
                let _ = try_run(&[
                    "losetup",
                    "-d",
                    &format!("/dev/{}", e.file_name().to_string_lossy()),
                ]);
            }
        }
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
pub fn mount_entry(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
        .rfind(|f| f.len() > 5 && f[4] == want)
}

/// Whether the mount at `path` is read-only, per mountinfo's per-mount options.
pub fn mounted_ro(path: &Path) -> bool {
    let e = mount_entry(path).unwrap_or_else(|| panic!("{} is not mounted", path.display()));
    e[5].split(',').any(|o| o == "ro")
}

/// A mount capability.
pub fn mount_cap(mode: Mode, fs: &str, flags: &[&str]) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: flags.iter().map(|s| s.to_string()).collect(),
            volume_mount_group: String::new(),
        })),
    })
}

/// A block capability.
pub fn block_cap(mode: Mode) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    })
}

/// A NodePublishVolumeRequest.
pub fn publish_req(
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

/// A string map.
pub fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A node plugin named w1 keeping its state in `s`, with no initiator files.
pub fn plain_node(tag: &str, s: &Scratch) -> Csi {
    node_plugin(
        tag,
        &format!(
            "\n[node]\nname = \"w1\"\nkubelet_dir = {:?}\nstate_dir = {:?}\ninitiator_file = {:?}\nhostnqn_file = {:?}\n",
            s.dir.path(),
            s.s("state"),
            s.s("no-initiatorname"),
            s.s("no-hostnqn")
        ),
    )
}

/// Write a staged-volume record into `s`'s state dir as the node writes one
/// (`state/volumes/<sha256 of the volume id>.json`), for tests that stage by hand what
/// this machine cannot attach.
pub fn write_stage_record(s: &Scratch, record: &serde_json::Value) {
    use sha2::Digest;
    let id = record["volume_id"].as_str().unwrap();
    let name: String = sha2::Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = s.path("state/volumes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec(record).unwrap(),
    )
    .unwrap();
}
