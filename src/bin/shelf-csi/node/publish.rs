//! NodePublishVolume and NodeUnpublishVolume: a bind mount of what stage put on the
//! staging path (the filesystem, or the file `<staging>/block` holding the device) onto
//! target_path, read-only when the request or the volume is; and its removal.

use std::path::Path;

use bpfman_csi::v1::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};
use tonic::Status;

use super::request::{self, Access};
use super::state::Presented;
use super::{mounts, stage, NodeCtx};

fn io_status(path: &Path, e: std::io::Error) -> Status {
    Status::internal(format!("{}: {e}", path.display()))
}

/// NodePublishVolume. A repeat with the same source and read-only flag is OK; a target
/// holding something else, or the same volume with the other flag, is ALREADY_EXISTS; a
/// staging path with nothing staged is FAILED_PRECONDITION.
pub async fn publish(node: &NodeCtx, req: NodePublishVolumeRequest) -> Result<(), Status> {
    let volume_id = request::volume_id(&req.volume_id)?;
    let staging = request::path("staging_target_path", &req.staging_target_path)?;
    let target = request::path("target_path", &req.target_path)?;
    let cap = request::capability(req.volume_capability.as_ref())?;
    let _busy = node.begin(volume_id)?;
    let staged = node.state.load(volume_id)?;
    let block = cap.access == Access::Block;
    if let Some(s) = &staged {
        if (s.presented == Presented::Block) != block {
            return Err(Status::already_exists(format!(
                "volume {volume_id} is staged with {} access",
                if block { "mount" } else { "block" }
            )));
        }
    }
    let read_only =
        req.readonly || cap.read_only_mode || staged.as_ref().is_some_and(|s| s.read_only);
    let source = if block {
        stage::block_file(&staging)
    } else {
        staging.clone()
    };
    let Some(source_mount) = mounts::mount_at(&source)? else {
        return Err(Status::failed_precondition(format!(
            "volume {volume_id} is not staged at {}",
            staging.display()
        )));
    };
    if let Some(m) = mounts::mount_at(&target)? {
        if m.same_source(&source_mount) && m.read_only() == read_only {
            return Ok(());
        }
        return Err(Status::already_exists(format!(
            "{} already holds {}",
            target.display(),
            if m.same_source(&source_mount) {
                "this volume with the other read-only flag"
            } else {
                "another mount"
            }
        )));
    }
    if block {
        if !target.exists() {
            std::fs::File::create(&target).map_err(|e| io_status(&target, e))?;
        }
    } else {
        std::fs::create_dir_all(&target).map_err(|e| io_status(&target, e))?;
    }
    mounts::bind(&node.tools, &source, &target, read_only).await?;
    log::info!(
        "published volume {volume_id} at {}{}",
        target.display(),
        if read_only { " (read-only)" } else { "" }
    );
    Ok(())
}

/// NodeUnpublishVolume: unmount target_path if mounted, then remove it (an empty
/// directory or the block file); a target that is not there is OK.
pub async fn unpublish(node: &NodeCtx, req: NodeUnpublishVolumeRequest) -> Result<(), Status> {
    let volume_id = request::volume_id(&req.volume_id)?;
    let target = request::path("target_path", &req.target_path)?;
    let _busy = node.begin(volume_id)?;
    mounts::unmount(&node.tools, &target).await?;
    let removed = match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(&target),
        Ok(_) => std::fs::remove_file(&target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(|e| io_status(&target, e))
}
