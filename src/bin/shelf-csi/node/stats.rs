//! NodeGetVolumeStats: bytes and inodes of a mounted volume (statvfs), the size of a
//! block one, and its condition: abnormal when the device it was staged from is gone or
//! its filesystem no longer answers.

use std::os::unix::fs::FileTypeExt;

use bpfman_csi::v1::volume_usage::Unit;
use bpfman_csi::v1::{
    NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, VolumeCondition, VolumeUsage,
};
use tonic::Status;

use super::tools::offload_for;
use super::{attach, format, mounts, request, NodeCtx};

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
    let path = node.lookup_path("volume_path", &req.volume_path)?;
    if !req.staging_target_path.is_empty() {
        node.co_path("staging_target_path", &req.staging_target_path)?;
    }
    let not_found = || Status::not_found(format!("{} is not a mounted volume", path.display()));
    if mounts::mount_at(&path).await?.is_none() {
        return Err(not_found());
    }
    let mut recorded = None;
    if let Some(s) = node
        .load_staged(volume_id)
        .await?
        .filter(|s| s.device.is_some())
    {
        match attach::current_device(&s).await? {
            Some(d) => recorded = Some(d),
            None => {
                return Ok(NodeGetVolumeStatsResponse {
                    usage: Vec::new(),
                    volume_condition: condition(
                        true,
                        format!("the device of volume {volume_id} is gone"),
                    ),
                })
            }
        }
    }
    let p = path.clone();
    match offload_for("measuring the volume", STATS_TIMEOUT, move || {
        measure(&p, recorded)
    })
    .await
    {
        Err(e) if e.code() == tonic::Code::DeadlineExceeded => Ok(NodeGetVolumeStatsResponse {
            usage: Vec::new(),
            volume_condition: condition(true, e.message().to_string()),
        }),
        other => other,
    }
}

/// How long statvfs, the device checks and the size read may take before the volume is
/// reported abnormal (a hung NFS server or a dead device blocks them).
const STATS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The blocking part of NodeGetVolumeStats, on a blocking thread: the usage of the
/// volume at `path` and its condition (`device` is the staged device, if recorded).
fn measure(
    path: &std::path::Path,
    device: Option<std::path::PathBuf>,
) -> Result<NodeGetVolumeStatsResponse, Status> {
    let meta = std::fs::metadata(path)
        .map_err(|_| Status::not_found(format!("{} is not a mounted volume", path.display())))?;
    if let Some(d) = device.filter(|d| !d.exists()) {
        return Ok(NodeGetVolumeStatsResponse {
            usage: Vec::new(),
            volume_condition: condition(true, format!("device {} is gone", d.display())),
        });
    }
    if meta.file_type().is_block_device() {
        return Ok(match format::device_size(path) {
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
    Ok(match nix::sys::statvfs::statvfs(path) {
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
