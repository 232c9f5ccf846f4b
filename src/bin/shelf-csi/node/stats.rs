//! NodeGetVolumeStats: bytes and inodes of a mounted volume (statvfs), the size of a
//! block one, and its condition: abnormal when the device it was staged from is gone or
//! its filesystem no longer answers.

use std::os::unix::fs::FileTypeExt;

use bpfman_csi::v1::volume_usage::Unit;
use bpfman_csi::v1::{
    NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, VolumeCondition, VolumeUsage,
};
use tonic::Status;

use super::{format, mounts, request, NodeCtx};

fn usage(unit: Unit, total: u64, available: u64, used: u64) -> VolumeUsage {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    VolumeUsage {
        available: i(available),
        total: i(total),
        used: i(used),
        unit: unit as i32,
    }
}

fn condition(abnormal: bool, message: String) -> Option<VolumeCondition> {
    Some(VolumeCondition { abnormal, message })
}

/// NodeGetVolumeStats. NOT_FOUND when volume_path is absent or not a mount point.
pub async fn stats(
    node: &NodeCtx,
    req: NodeGetVolumeStatsRequest,
) -> Result<NodeGetVolumeStatsResponse, Status> {
    let volume_id = request::volume_id(&req.volume_id)?;
    let path = node.co_path("volume_path", &req.volume_path)?;
    if !req.staging_target_path.is_empty() {
        node.co_path("staging_target_path", &req.staging_target_path)?;
    }
    let not_found = || Status::not_found(format!("{} is not a mounted volume", path.display()));
    let meta = std::fs::metadata(&path).map_err(|_| not_found())?;
    if mounts::mount_at(&path)?.is_none() {
        return Err(not_found());
    }
    let device_gone = node
        .state
        .load(volume_id)?
        .and_then(|s| s.device)
        .filter(|d| !d.exists());
    if let Some(d) = device_gone {
        return Ok(NodeGetVolumeStatsResponse {
            usage: Vec::new(),
            volume_condition: condition(true, format!("device {} is gone", d.display())),
        });
    }
    if meta.file_type().is_block_device() {
        return Ok(match format::device_size(&path) {
            Ok(size) => NodeGetVolumeStatsResponse {
                usage: vec![usage(Unit::Bytes, size, 0, 0)],
                volume_condition: condition(false, String::new()),
            },
            Err(e) => NodeGetVolumeStatsResponse {
                usage: Vec::new(),
                volume_condition: condition(true, format!("reading the device: {e}")),
            },
        });
    }
    Ok(match nix::sys::statvfs::statvfs(&path) {
        Ok(v) => {
            let f = v.fragment_size();
            let (blocks, free, avail) = (v.blocks(), v.blocks_free(), v.blocks_available());
            let (files, files_free) = (v.files(), v.files_free());
            NodeGetVolumeStatsResponse {
                usage: vec![
                    usage(
                        Unit::Bytes,
                        blocks * f,
                        avail * f,
                        blocks.saturating_sub(free) * f,
                    ),
                    usage(
                        Unit::Inodes,
                        files,
                        files_free,
                        files.saturating_sub(files_free),
                    ),
                ],
                volume_condition: condition(false, String::new()),
            }
        }
        Err(e) => NodeGetVolumeStatsResponse {
            usage: Vec::new(),
            volume_condition: condition(true, format!("statvfs: {e}")),
        },
    })
}
