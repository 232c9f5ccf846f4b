//! NodeStageVolume and NodeUnstageVolume.
//!
//! Stage: check the request, answer a repeat from the record in the state dir, write the
//! record first (so an unstage after a crash half-way knows what to undo), attach
//! (attach.rs), then present: NFS mounted (vers 4.2) on the staging path; a block volume
//! with mount access formatted only when blank (format.rs) and mounted there; one with
//! block access bind-mounted onto the file `<staging path>/block` (the device is recorded
//! and held there, so publish needs nothing but the staging path).
//!
//! A stage that fails after its record was written (the device never appears, mkfs or
//! the mount fails) is undone at once: unmount, detach (unless shared), forget the record;
//! when the undo fails too, the error says so and carries both causes.
//!
//! Unstage undoes it: unmount, detach unless another staged volume shares the session,
//! forget the record. A volume never staged is fine (CSI: idempotent).

use std::path::{Path, PathBuf};

use bpfman_csi::v1::{NodeStageVolumeRequest, NodeUnstageVolumeRequest};
use tonic::Status;

use super::request::{self, Access, DEFAULT_FS, FILESYSTEMS};
use super::state::{Presented, Staged, Transport};
use super::{attach, format, mounts, NodeCtx};
use crate::context;

/// The file on the staging path a block volume's device is bind-mounted on.
pub fn block_file(staging: &Path) -> PathBuf {
    staging.join("block")
}

/// What the request asks to stage, checked (no I/O).
fn wanted(req: &NodeStageVolumeRequest) -> Result<Staged, Status> {
    let volume_id = request::volume_id(&req.volume_id)?;
    let staging = request::path("staging_target_path", &req.staging_target_path)?;
    let cap = request::capability(req.volume_capability.as_ref())?;
    let transport = attach::transport_of(&req.publish_context, &req.volume_context)?;
    let nfs = matches!(transport, Transport::Nfs { .. });
    let presented = match cap.access {
        Access::Block if nfs => {
            return Err(Status::invalid_argument(
                "an NFS volume has no block access; ask for mount access",
            ))
        }
        Access::Block => Presented::Block,
        Access::Mount { flags, .. } if nfs => Presented::Mount {
            fs_type: "nfs4".into(),
            flags,
        },
        Access::Mount { fs_type, flags } => {
            let fs_type = [
                fs_type.as_str(),
                req.volume_context.get("fsType").map_or("", String::as_str),
            ]
            .into_iter()
            .find(|f| !f.is_empty())
            .unwrap_or(DEFAULT_FS)
            .to_string();
            if !FILESYSTEMS.contains(&fs_type.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "fsType {fs_type:?}: this node makes {}",
                    FILESYSTEMS.join(", ")
                )));
            }
            Presented::Mount { fs_type, flags }
        }
    };
    let attached_ro = req
        .publish_context
        .get(context::ACCESS_MODE)
        .is_some_and(|m| m == "ro");
    Ok(Staged {
        volume_id: volume_id.to_string(),
        staging_path: staging,
        transport,
        presented,
        read_only: cap.read_only_mode || attached_ro,
        device: None,
    })
}

/// Whether what `staged` put on its staging path is still there.
async fn is_live(staged: &Staged) -> Result<bool, Status> {
    match staged.presented {
        Presented::Block => mounts::is_mounted(&block_file(&staged.staging_path)).await,
        Presented::Mount { .. } => mounts::is_mounted(&staged.staging_path).await,
    }
}

/// NodeStageVolume.
pub async fn stage(node: &NodeCtx, req: NodeStageVolumeRequest) -> Result<(), Status> {
    let mut want = wanted(&req)?;
    node.beneath("staging_target_path", &want.staging_path)?;
    let _busy = node.begin(&want.volume_id)?;
    match node.load_staged(&want.volume_id).await? {
        Some(have) if have.staging_path != want.staging_path => {
            return Err(Status::failed_precondition(format!(
                "volume {} is already staged at {}",
                want.volume_id,
                have.staging_path.display()
            )))
        }
        Some(have)
            if (&have.transport, &have.presented, have.read_only)
                != (&want.transport, &want.presented, want.read_only) =>
        {
            return Err(Status::already_exists(format!(
                "volume {} is staged at {} with another capability or publish context",
                want.volume_id,
                want.staging_path.display()
            )))
        }
        Some(have) if is_live(&have).await? => return Ok(()),
        Some(_) => {} // recorded but not mounted (after a reboot): stage it again
        None => {
            let taken = node
                .state
                .all()?
                .into_iter()
                .any(|s| s.staging_path == want.staging_path)
                || mounts::is_mounted(&want.staging_path).await?;
            if taken {
                return Err(Status::already_exists(format!(
                    "{} already holds another volume",
                    want.staging_path.display()
                )));
            }
        }
    }
    let chap = attach::chap_of(node, &want.volume_id, &req.publish_context, &req.secrets)?;
    node.save_staged(&want).await?;
    let attached = attach::attach(node, &want, chap.as_ref()).await;
    drop(chap);
    let done = match attached {
        Ok(device) => {
            want.device = device;
            match node.save_staged(&want).await {
                Ok(()) => present(node, &want).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(cause) = done {
        return Err(undo(node, &want, cause).await);
    }
    log::info!(
        "staged volume {} at {}",
        want.volume_id,
        want.staging_path.display()
    );
    Ok(())
}

/// Undo a stage that failed with `cause` after its record was written: unmount what
/// present() may have mounted, detach (unless another staged volume shares the session;
/// the iSCSI record and its CHAP secret go with the logout), forget the record. When the
/// undo fails too, the status carries both causes (STYLE rule 15), with `cause`'s code.
async fn undo(node: &NodeCtx, staged: &Staged, cause: Status) -> Status {
    let mut failed: Vec<String> = Vec::new();
    let mut note = |r: Result<(), Status>| {
        if let Err(e) = r {
            failed.push(e.message().to_string());
        }
    };
    note(take_down(node, staged).await);
    let others = node.all_staged().await;
    note(match others {
        Ok(others) => attach::detach(node, staged, &others).await,
        Err(e) => Err(e),
    });
    note(node.remove_staged(&staged.volume_id).await);
    if failed.is_empty() {
        return cause;
    }
    Status::new(
        cause.code(),
        format!(
            "{}; and undoing the stage failed too (unstage it to retry): {}",
            cause.message(),
            failed.join("; ")
        ),
    )
}

/// Unmount what stage put on the staging path (and remove the block file it made).
async fn take_down(node: &NodeCtx, staged: &Staged) -> Result<(), Status> {
    match staged.presented {
        Presented::Block => {
            let file = block_file(&staged.staging_path);
            mounts::unmount(&node.tools, &file).await?;
            request::remove_created(&file)
        }
        Presented::Mount { .. } => mounts::unmount(&node.tools, &staged.staging_path).await,
    }
}

fn io_status(path: &Path, e: std::io::Error) -> Status {
    Status::internal(format!("{}: {e}", path.display()))
}

/// The `mount -o` options of a block volume's filesystem: `ro` when read-only, `nouuid`
/// for XFS (a clone carries its origin's UUID, and XFS refuses a second mount of one
/// UUID, so a clone could not be staged beside its origin), then the CO's flags.
fn filesystem_options(fs: &str, read_only: bool, flags: &[String]) -> Vec<String> {
    let ro = read_only.then(|| "ro".to_string());
    let nouuid = (fs == "xfs").then(|| "nouuid".to_string());
    ro.into_iter()
        .chain(nouuid)
        .chain(flags.iter().cloned())
        .collect()
}

/// Put the attached volume on its staging path.
async fn present(node: &NodeCtx, staged: &Staged) -> Result<(), Status> {
    let staging = &staged.staging_path;
    std::fs::create_dir_all(staging).map_err(|e| io_status(staging, e))?;
    let ro = staged.read_only.then(|| "ro".to_string());
    match (&staged.transport, &staged.presented, &staged.device) {
        (Transport::Nfs { export }, Presented::Mount { flags, .. }, _) => {
            let opts: Vec<String> = std::iter::once("vers=4.2".to_string())
                .chain(ro)
                .chain(flags.iter().cloned())
                .collect();
            mounts::mount(&node.tools, export, staging, Some("nfs4"), &opts).await
        }
        (_, Presented::Mount { fs_type, flags }, Some(device)) => {
            let fs =
                format::ensure_filesystem(&node.tools, device, fs_type, !staged.read_only).await?;
            let opts = filesystem_options(&fs, staged.read_only, flags);
            mounts::mount(
                &node.tools,
                &device.to_string_lossy(),
                staging,
                Some(&fs),
                &opts,
            )
            .await
        }
        (_, Presented::Block, Some(device)) => {
            let file = block_file(staging);
            request::create_file(&file)?;
            mounts::bind(&node.tools, device, &file, staged.read_only).await
        }
        _ => Err(Status::internal(format!(
            "volume {}: attached without a device",
            staged.volume_id
        ))),
    }
}

/// NodeUnstageVolume.
pub async fn unstage(node: &NodeCtx, req: NodeUnstageVolumeRequest) -> Result<(), Status> {
    let volume_id = request::volume_id(&req.volume_id)?;
    let staging = node.co_path("staging_target_path", &req.staging_target_path)?;
    let _busy = node.begin(volume_id)?;
    let Some(staged) = node.load_staged(volume_id).await? else {
        return Ok(());
    };
    if staged.staging_path != staging {
        log::warn!(
            "unstage of volume {volume_id} at {}: it is staged at {}; nothing done",
            staging.display(),
            staged.staging_path.display()
        );
        return Ok(());
    }
    take_down(node, &staged).await?;
    attach::detach(node, &staged, &node.all_staged().await?).await?;
    node.remove_staged(volume_id).await?;
    log::info!("unstaged volume {volume_id} from {}", staging.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfman_csi::v1::volume_capability::access_mode::Mode;
    use bpfman_csi::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    use bpfman_csi::v1::VolumeCapability;
    use std::collections::HashMap;

    fn req(
        fs: Option<&str>,
        mode: Mode,
        pc: &[(&str, &str)],
        vc: &[(&str, &str)],
    ) -> NodeStageVolumeRequest {
        let access_type = match fs {
            Some(fs) => AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: vec![],
                volume_mount_group: String::new(),
            }),
            None => AccessType::Block(BlockVolume {}),
        };
        let map = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        NodeStageVolumeRequest {
            volume_id: "a1:v1".into(),
            staging_target_path: "/s".into(),
            volume_capability: Some(VolumeCapability {
                access_mode: Some(AccessMode { mode: mode as i32 }),
                access_type: Some(access_type),
            }),
            publish_context: map(pc),
            volume_context: map(vc),
            ..Default::default()
        }
    }

    const ISCSI: &[(&str, &str)] = &[
        ("protocol", "iscsi"),
        ("target_portal", "192.0.2.1:3260"),
        ("target_iqn", "iqn.2026-01.io.shelf:v1"),
        ("target_lun", "1"),
    ];

    #[test]
    fn the_filesystem_comes_from_the_capability_then_the_volume_context_then_ext4() {
        let fs = |r: NodeStageVolumeRequest| match wanted(&r).unwrap().presented {
            Presented::Mount { fs_type, .. } => fs_type,
            Presented::Block => "block".into(),
        };
        let w = Mode::SingleNodeWriter;
        assert_eq!(fs(req(Some(""), w, ISCSI, &[])), "ext4");
        assert_eq!(fs(req(Some(""), w, ISCSI, &[("fsType", "xfs")])), "xfs");
        assert_eq!(
            fs(req(Some("ext4"), w, ISCSI, &[("fsType", "xfs")])),
            "ext4"
        );
        assert_eq!(fs(req(None, w, ISCSI, &[])), "block");
        let nfs = &[("protocol", "nfs"), ("nfs_export", "h:/e")];
        assert_eq!(fs(req(Some(""), w, nfs, &[])), "nfs4");
        let e = wanted(&req(Some(""), w, ISCSI, &[("fsType", "btrfs")])).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn xfs_is_mounted_nouuid_so_a_clone_stages_beside_its_origin() {
        let flags = vec!["noatime".to_string()];
        assert_eq!(
            filesystem_options("xfs", true, &flags),
            ["ro", "nouuid", "noatime"]
        );
        assert_eq!(filesystem_options("ext4", false, &flags), ["noatime"]);
    }

    #[test]
    fn read_only_from_the_access_mode_or_the_attachment() {
        let ro =
            |mode, pc: &[(&str, &str)]| wanted(&req(Some(""), mode, pc, &[])).unwrap().read_only;
        assert!(!ro(Mode::SingleNodeWriter, ISCSI));
        assert!(ro(Mode::SingleNodeReaderOnly, ISCSI));
        let mut attached_ro = ISCSI.to_vec();
        attached_ro.push(("access_mode", "ro"));
        assert!(ro(Mode::SingleNodeWriter, &attached_ro));
    }
}
