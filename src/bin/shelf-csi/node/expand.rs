//! NodeExpandVolume: after the controller grew the share, rescan the session so the
//! device shows the new size, then grow the filesystem (resize2fs for ext4, xfs_growfs for
//! xfs) when the volume has mount access; answer the device's size. An NFS volume needs
//! nothing here: the appliance grew its filesystem.

use bpfman_csi::v1::{NodeExpandVolumeRequest, NodeExpandVolumeResponse};
use tonic::Status;

use super::state::{Presented, Transport};
use super::tools::offload;
use super::{attach, format, request, NodeCtx};

/// NodeExpandVolume. NOT_FOUND when the volume is not staged here or volume_path is
/// absent.
pub async fn expand(
    node: &NodeCtx,
    req: NodeExpandVolumeRequest,
) -> Result<NodeExpandVolumeResponse, Status> {
    let volume_id = request::volume_id(&req.volume_id)?;
    let path = node.lookup_path("volume_path", &req.volume_path)?;
    if !req.staging_target_path.is_empty() {
        node.co_path("staging_target_path", &req.staging_target_path)?;
    }
    if req.volume_capability.is_some() {
        request::capability(req.volume_capability.as_ref())?;
    }
    let _busy = node.begin(volume_id)?;
    let staged = node.load_staged(volume_id).await?.ok_or_else(|| {
        Status::not_found(format!("volume {volume_id} is not staged on this node"))
    })?;
    if !path.exists() {
        return Err(Status::not_found(format!(
            "{} does not exist",
            path.display()
        )));
    }
    if let Transport::Nfs { .. } = staged.transport {
        let at = staged.staging_path.clone();
        let bytes = offload("statvfs of the staging path", move || {
            nix::sys::statvfs::statvfs(&at)
                .map(|v| v.blocks() * v.fragment_size())
                .map_err(|e| Status::internal(format!("statvfs {}: {e}", at.display())))
        })
        .await?;
        return Ok(NodeExpandVolumeResponse {
            capacity_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
        });
    }
    attach::rescan(node, &staged).await?;
    let device = attach::current_device(&staged).await?.ok_or_else(|| {
        Status::failed_precondition(format!("volume {volume_id} has no device on this node"))
    })?;
    if let Presented::Mount { fs_type, .. } = &staged.presented {
        if staged.read_only {
            return Err(Status::failed_precondition(format!(
                "volume {volume_id} is staged read-only; its filesystem cannot grow"
            )));
        }
        format::grow(&node.tools, fs_type, &device, &staged.staging_path).await?;
    }
    let size = offload("reading the device's size", move || {
        format::device_size(&device)
            .map_err(|e| Status::internal(format!("{}: {e}", device.display())))
    })
    .await?;
    Ok(NodeExpandVolumeResponse {
        capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX),
    })
}
