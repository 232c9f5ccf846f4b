//! NodePublishVolume and NodeUnpublishVolume: a bind mount of what stage put on the
//! staging path (the filesystem, or the file `<staging>/block` holding the device) onto
//! target_path, read-only when the request or the volume is; and its removal.
//!
//! A read-only bind mount does not stop writes through a device node (the kernel applies
//! a mount's `ro` to files' data, not to the device a node opens), so a read-only block
//! publish binds a read-only loop device made over the staged device (`losetup
//! --read-only`), recorded in the state dir so unpublish detaches that loop and only it.

use std::path::{Path, PathBuf};

use bpfman_csi::v1::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};
use tonic::Status;

use super::request::{self, Access};
use super::state::{Presented, ReadOnlyLoop};
use super::{mounts, stage, NodeCtx};

fn io_status(path: &Path, e: std::io::Error) -> Status {
    Status::internal(format!("{}: {e}", path.display()))
}

/// NodePublishVolume. A repeat with the same source and read-only flag is OK; a target
/// holding something else, or the same volume with the other flag, is ALREADY_EXISTS; a
/// volume without a stage record, staged at another path, or with nothing mounted on its
/// staging path is FAILED_PRECONDITION.
pub async fn publish(node: &NodeCtx, req: NodePublishVolumeRequest) -> Result<(), Status> {
    let volume_id = request::volume_id(&req.volume_id)?;
    let staging = node.co_path("staging_target_path", &req.staging_target_path)?;
    let target = node.co_path("target_path", &req.target_path)?;
    let cap = request::capability(req.volume_capability.as_ref())?;
    let _busy = node.begin(volume_id)?;
    // Only what this node staged, where it staged it: a mount the CO points at on its
    // own is not a volume of this driver.
    let staged = node.load_staged(volume_id).await?.ok_or_else(|| {
        Status::failed_precondition(format!("volume {volume_id} is not staged on this node"))
    })?;
    if staged.staging_path != staging {
        return Err(Status::failed_precondition(format!(
            "volume {volume_id} is staged at {}, not {}",
            staged.staging_path.display(),
            staging.display()
        )));
    }
    let block = cap.access == Access::Block;
    if (staged.presented == Presented::Block) != block {
        return Err(Status::already_exists(format!(
            "volume {volume_id} is staged with {} access",
            if block { "mount" } else { "block" }
        )));
    }
    let read_only = req.readonly || cap.read_only_mode || staged.read_only;
    let source = if block {
        stage::block_file(&staging)
    } else {
        staging.clone()
    };
    let Some(source_mount) = mounts::mount_at(&source).await? else {
        return Err(Status::failed_precondition(format!(
            "volume {volume_id} is not staged at {}",
            staging.display()
        )));
    };
    let ro_loop = node.load_loop(&target).await?;
    if let Some(m) = mounts::mount_at(&target).await? {
        let same = match (block && read_only, &ro_loop) {
            (true, Some(_)) => true,
            (true, None) => false,
            (false, _) => m.same_source(&source_mount),
        };
        if same && m.read_only() == read_only {
            return Ok(());
        }
        return Err(Status::already_exists(format!(
            "{} already holds another mount, or this volume with the other read-only flag",
            target.display(),
        )));
    }
    if let Some(stale) = ro_loop {
        detach_loop(node, &stale).await?;
    }
    if block {
        request::create_file(&target)?;
    } else {
        std::fs::create_dir_all(&target).map_err(|e| io_status(&target, e))?;
    }
    if block && read_only {
        bind_read_only_loop(node, &source, &target).await?;
    } else {
        mounts::bind(&node.tools, &source, &target, read_only).await?;
    }
    log::info!(
        "published volume {volume_id} at {}{}",
        target.display(),
        if read_only { " (read-only)" } else { "" }
    );
    Ok(())
}

/// Make a read-only loop device over `source`, record it, and bind it on `target`; the
/// loop is detached again when the bind fails.
async fn bind_read_only_loop(node: &NodeCtx, source: &Path, target: &Path) -> Result<(), Status> {
    let cmd = node
        .tools
        .cmd("losetup")?
        .args(["--read-only", "--find", "--show"])
        .arg(source.to_string_lossy());
    let device = PathBuf::from(node.tools.run(cmd).await?.stdout_text().trim());
    let l = ReadOnlyLoop {
        target: target.to_path_buf(),
        device,
    };
    let bound = match node.save_loop(&l).await {
        Ok(()) => mounts::bind(&node.tools, &l.device, target, true).await,
        Err(e) => Err(e),
    };
    if let Err(e) = bound {
        let _ = detach_loop(node, &l).await;
        return Err(e);
    }
    Ok(())
}

/// Detach a recorded read-only loop (one already gone is fine) and forget it.
async fn detach_loop(node: &NodeCtx, l: &ReadOnlyLoop) -> Result<(), Status> {
    if l.device.exists() {
        let cmd = node
            .tools
            .cmd("losetup")?
            .arg("--detach")
            .arg(l.device.to_string_lossy());
        node.tools.run(cmd).await?;
    }
    node.remove_loop(&l.target).await
}

/// NodeUnpublishVolume: unmount target_path if mounted, then remove it (an empty
/// directory or the block file); a target that is not there is OK.
pub async fn unpublish(node: &NodeCtx, req: NodeUnpublishVolumeRequest) -> Result<(), Status> {
    let volume_id = request::volume_id(&req.volume_id)?;
    let target = node.co_path("target_path", &req.target_path)?;
    let _busy = node.begin(volume_id)?;
    mounts::unmount(&node.tools, &target).await?;
    if let Some(l) = node.load_loop(&target).await? {
        detach_loop(node, &l).await?;
    }
    request::remove_created(&target)
}
