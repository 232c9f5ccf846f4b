//! What the node staged, kept in `node.state_dir` as one small JSON file per volume
//! (`volumes/<sha256 of the volume id>.json`, mode 0600, written to a temporary file,
//! synced and renamed, so a crash leaves the old record or the new one, never half of
//! one). NodeUnstage reads it to know which session, connection and mount to undo,
//! including after a restart of the plugin or of the machine.
//!
//! Trust: the files are written only by this process, under a root-owned directory; a
//! record that does not parse is reported, never guessed at. No secret is stored here.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

/// How the volume reaches this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum Transport {
    /// An iSCSI session to `iqn` on `portal`, the volume being LUN `lun`.
    Iscsi {
        /// `address:port`.
        portal: String,
        /// The target IQN.
        iqn: String,
        /// The LUN.
        lun: u32,
    },
    /// An NVMe/TCP connection to subsystem `nqn`, the volume being the namespace with
    /// this NGUID.
    Nvme {
        /// The subsystem NQN.
        nqn: String,
        /// The portal address.
        address: String,
        /// The portal port.
        port: String,
        /// The namespace's NGUID (or UUID).
        nguid: String,
    },
    /// An NFS mount of `export` (`host:path`).
    Nfs {
        /// What is mounted.
        export: String,
    },
}

impl Transport {
    /// The protocol's name, as in publish_context.
    pub fn protocol(&self) -> &'static str {
        match self {
            Transport::Iscsi { .. } => "iscsi",
            Transport::Nvme { .. } => "nvme",
            Transport::Nfs { .. } => "nfs",
        }
    }
}

/// How the volume is presented on the staging path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Presented {
    /// A filesystem mounted on the staging path.
    Mount {
        /// ext4, xfs, or nfs4.
        fs_type: String,
        /// The mount flags asked for.
        flags: Vec<String>,
    },
    /// A raw block device, bind-mounted on the file `<staging path>/block`.
    Block,
}

/// One staged volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staged {
    /// The CSI volume id.
    pub volume_id: String,
    /// The staging_target_path it was staged on.
    pub staging_path: PathBuf,
    /// How it reaches this machine.
    pub transport: Transport,
    /// How it is presented.
    pub presented: Presented,
    /// Whether it was staged read-only.
    pub read_only: bool,
    /// The block device (a stable `/dev/disk/by-path` name for iSCSI, `/dev/nvmeXnY` for
    /// NVMe, looked up again by NGUID whenever it is used since a reconnect renames it),
    /// once the attach found it; none for NFS.
    #[serde(default)]
    pub device: Option<PathBuf>,
}

/// A read-only block publish: the read-only loop device made over the staged device for
/// one target (so NodeUnpublishVolume detaches it, and only it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOnlyLoop {
    /// The target_path it is bind-mounted on.
    pub target: PathBuf,
    /// The loop device (`/dev/loopN`).
    pub device: PathBuf,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    loops: PathBuf,
}

impl StateDir {
    /// The records under `root` (created on first write).
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            dir: root.join("volumes"),
            loops: root.join("readonly-loops"),
        }
    }

    fn path_of(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!("{}.json", hex_digest(volume_id)))
    }

    fn loop_path(&self, target: &Path) -> PathBuf {
        self.loops
            .join(format!("{}.json", hex_digest(&target.to_string_lossy())))
    }

    /// Record the read-only loop device made for `l.target`.
    pub fn save_loop(&self, l: &ReadOnlyLoop) -> Result<(), Status> {
        let bytes = serde_json::to_vec(l)
            .map_err(|e| Status::internal(format!("encoding the loop record: {e}")))?;
        write_atomic(&self.loops, &self.loop_path(&l.target), &bytes)
    }

    /// The read-only loop device recorded for `target`, if any.
    pub fn load_loop(&self, target: &Path) -> Result<Option<ReadOnlyLoop>, Status> {
        let path = self.loop_path(target);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Status::internal(format!("{}: not a loop record ({e})", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Status::internal(format!("{}: {e}", path.display()))),
        }
    }

    /// Forget the loop record of `target`.
    pub fn remove_loop(&self, target: &Path) -> Result<(), Status> {
        match std::fs::remove_file(self.loop_path(target)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Status::internal(format!("{}: {e}", self.loops.display())))
            }
            _ => Ok(()),
        }
    }

    /// The record of `volume_id`, if it was staged.
    pub fn load(&self, volume_id: &str) -> Result<Option<Staged>, Status> {
        let path = self.path_of(volume_id);
        match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Status::internal(format!("{}: {e}", path.display()))),
        }
    }

    /// Every record that parses (to find the volume on a path, or the others sharing a
    /// target). One that does not (hand-edited, written by another version) is logged and
    /// skipped, so it cannot stop every stage and unstage on the node; [`StateDir::load`]
    /// of that volume stays strict.
    pub fn all(&self) -> Result<Vec<Staged>, Status> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Status::internal(format!("{}: {e}", self.dir.display()))),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "json") {
                let parsed = std::fs::read(&path)
                    .map_err(|e| Status::internal(format!("{}: {e}", path.display())))
                    .and_then(|bytes| parse(&path, &bytes));
                match parsed {
                    Ok(staged) => out.push(staged),
                    Err(e) => log::warn!("skipping a stage record: {}", e.message()),
                }
            }
        }
        Ok(out)
    }

    /// Write `staged` atomically (temporary file 0600, fsync, rename, fsync the dir).
    pub fn save(&self, staged: &Staged) -> Result<(), Status> {
        let bytes = serde_json::to_vec_pretty(staged)
            .map_err(|e| Status::internal(format!("encoding the staged record: {e}")))?;
        write_atomic(&self.dir, &self.path_of(&staged.volume_id), &bytes)
    }

    /// Forget `volume_id` (nothing when there is no record).
    pub fn remove(&self, volume_id: &str) -> Result<(), Status> {
        let path = self.path_of(volume_id);
        match std::fs::remove_file(&path) {
            Ok(()) => shelf::sys::fs::fsync_dir(&self.dir)
                .map_err(|e| Status::internal(format!("{}: {e}", self.dir.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Status::internal(format!("{}: {e}", path.display()))),
        }
    }
}

/// Lower-case hex SHA-256 of `text` (a file name for any id or path).
fn hex_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Write `bytes` to `path` in `dir` atomically: a temporary file 0600, fsync, rename,
/// fsync the directory.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), Status> {
    let err = |p: &Path, e: std::io::Error| Status::internal(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = shelf::sys::fs::create_new(&tmp, 0o600).map_err(|e| err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
    shelf::sys::fs::fsync_dir(dir).map_err(|e| err(dir, e))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Staged, Status> {
    serde_json::from_slice(bytes).map_err(|e| {
        Status::internal(format!(
            "{}: not a staged-volume record ({e}); remove it by hand once the volume is unstaged",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> Staged {
        Staged {
            volume_id: id.into(),
            staging_path: "/var/lib/kubelet/s".into(),
            transport: Transport::Iscsi {
                portal: "192.0.2.1:3260".into(),
                iqn: "iqn.2026-01.io.shelf:v1".into(),
                lun: 1,
            },
            presented: Presented::Mount {
                fs_type: "ext4".into(),
                flags: vec!["noatime".into()],
            },
            read_only: false,
            device: Some("/dev/disk/by-path/x".into()),
        }
    }

    #[test]
    fn save_load_all_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        assert_eq!(s.load("a1:v1").unwrap(), None);
        assert!(s.all().unwrap().is_empty());
        s.save(&sample("a1:v1")).unwrap();
        s.save(&sample("a1:v2")).unwrap();
        assert_eq!(s.load("a1:v1").unwrap(), Some(sample("a1:v1")));
        assert_eq!(s.all().unwrap().len(), 2);
        let mut changed = sample("a1:v1");
        changed.device = None;
        s.save(&changed).unwrap();
        assert_eq!(s.load("a1:v1").unwrap(), Some(changed));
        s.remove("a1:v1").unwrap();
        s.remove("a1:v1").unwrap();
        assert_eq!(s.load("a1:v1").unwrap(), None);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("volumes"))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn records_are_private_and_a_broken_one_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        s.save(&sample("a1:v1")).unwrap();
        let path = s.path_of("a1:v1");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"{").unwrap();
        let e = s.load("a1:v1").unwrap_err();
        assert!(e.message().contains("not a staged-volume record"), "{e}");
        s.save(&sample("a1:v2")).unwrap();
        assert_eq!(
            s.all().unwrap(),
            vec![sample("a1:v2")],
            "all() skips the broken record"
        );
    }
}
