//! The iSCSI flow with a filesystem (ext4 on a thin LV, exported by tgtd): CHAP login by
//! the real iscsiadm and iscsid, mkfs on first stage only, the bind mount, a wrong sealing
//! key refused before any login, expansion of the LV and then of the filesystem, and the
//! volume's stats.

use bpfman_csi::v1::volume_usage::Unit;
use bpfman_csi::v1::{
    CapacityRange, ControllerExpandVolumeRequest, NodeExpandVolumeRequest,
    NodeGetVolumeStatsRequest,
};

use super::co::{status, Co, Volume, CHAP_SEALING_SECRET, WRONG_SEALING_SECRET};
use super::flows::{self, FlowResult, GUEST_IQN, MIB};
use super::report::{
    device_size, ensure, fs_size, iscsi_sessions, mount_source, mounted_fs, run, wait_until, Report,
};

const PREFIX: &str = "csi-iscsi";
const FILE_TEXT: &str = "written by the pod through shelf-csi's iSCSI volume\n";

/// The flow; the volume is torn down whatever happened.
pub async fn mount_ext4(r: &mut Report, co: &mut Co, node_id: &str) -> FlowResult {
    r.section("CSI: iSCSI volume with ext4, CHAP");
    let params = [("protocol", "iscsi")];
    let mut v = flows::create(
        r,
        co,
        "csi-iscsi-create-volume",
        "pvc-iscsi-ext4",
        64 * MIB,
        Some("ext4"),
        &params,
    )
    .await?;
    let result = steps(r, co, &mut v, node_id).await;
    if result.is_err() {
        co.tear_down(&v, node_id).await;
    }
    result
}

async fn steps(r: &mut Report, co: &mut Co, v: &mut Volume, node_id: &str) -> FlowResult {
    let check = "csi-iscsi-controller-publish-attaches";
    flows::controller_publish(r, co, check, v, node_id, GUEST_IQN).await?;
    let pc = v.publish_context.clone();
    r.check(
        "csi-iscsi-publish-context-sealed-chap",
        ensure(
            [
                "target_iqn",
                "target_portal",
                "chap_user",
                "chap_secret_sealed",
            ]
            .iter()
            .all(|k| pc.get(*k).is_some_and(|s| !s.is_empty())),
            || format!("publish_context {pc:?}"),
        ),
    )?;
    let iqn = pc["target_iqn"].clone();
    stage_and_check(r, co, v, &iqn, "csi-iscsi-stage-chap-login-mkfs").await?;
    publish_and_check(r, co, v, "csi-iscsi-publish-bind-mount").await?;
    let file = v.target.join("hello.txt");
    r.check(
        "csi-iscsi-pod-writes",
        flows::write_synced(&file, FILE_TEXT),
    )?;

    let first = co.unpublish(v).await;
    let again = co.unpublish(v).await;
    r.check(
        "csi-iscsi-unpublish",
        first.and(again).and_then(|()| {
            ensure(mounted_fs(&v.target).is_none(), || {
                format!("{} still mounted", v.target.display())
            })
        }),
    )?;
    unstage_and_check(r, co, v, &iqn, "csi-iscsi-unstage-logs-out").await?;

    // The node given another Secret cannot open the sealed CHAP secret: refused, and no
    // login was tried (no session, nothing mounted).
    let wrong = co.stage(v, WRONG_SEALING_SECRET).await;
    r.check(
        "csi-iscsi-wrong-chap-key-refused",
        match wrong {
            Ok(()) => Err("NodeStage with another chapKey succeeded".to_string()),
            Err(e) => {
                let gone = wait_until(5, || !iscsi_sessions().contains(&iqn)).await;
                ensure(gone && mounted_fs(&v.staging).is_none(), || {
                    format!("refused ({e}) but a session or mount is left")
                })
            }
        },
    )?;

    // Staged again: the filesystem is the same one (mkfs did not run on it twice).
    stage_and_check(r, co, v, &iqn, "csi-iscsi-restage").await?;
    publish_and_check(r, co, v, "csi-iscsi-republish").await?;
    let file_back = flows::read(&file);
    r.check(
        "csi-iscsi-restage-keeps-data",
        file_back.and_then(|t| ensure(t == FILE_TEXT, || format!("hello.txt holds {t:?}"))),
    )?;

    expand(r, co, v).await?;
    stats(r, co, v).await?;

    co.unpublish(v)
        .await
        .map_err(|e| format!("unpublish: {e}"))?;
    unstage_and_check(r, co, v, &iqn, "csi-iscsi-unstage-again").await?;
    flows::unpublish_and_delete(r, co, PREFIX, v, node_id).await
}

/// NodeStage with the right key, checked: a session to the target with the CHAP user of
/// publish_context, and an ext4 mounted at the staging path.
async fn stage_and_check(
    r: &mut Report,
    co: &mut Co,
    v: &Volume,
    iqn: &str,
    check: &str,
) -> FlowResult {
    let staged = co.stage(v, CHAP_SEALING_SECRET).await;
    let user = v.publish_context["chap_user"].clone();
    r.check(
        check,
        staged.and_then(|()| {
            ensure(iscsi_sessions().iter().any(|s| s == iqn), || {
                format!("no iSCSI session to {iqn}: {:?}", iscsi_sessions())
            })?;
            let detail = run(&["iscsiadm", "-m", "session", "-P", "2"])?;
            ensure(detail.contains(&format!("username: {user}")), || {
                format!("the session's CHAP user is not {user}:\n{detail}")
            })?;
            let fs = mounted_fs(&v.staging);
            ensure(fs.as_deref() == Some("ext4"), || {
                format!("{} has {fs:?} mounted", v.staging.display())
            })
        }),
    )
}

/// NodePublish, checked: the target path is a mount of the staged filesystem.
pub async fn publish_and_check(r: &mut Report, co: &mut Co, v: &Volume, check: &str) -> FlowResult {
    let published = co.publish(v).await;
    r.check(
        check,
        published.and_then(|()| {
            let (t, s) = (mount_source(&v.target), mount_source(&v.staging));
            ensure(t.is_some() && t == s, || {
                format!("target mounts {t:?}, staging {s:?}")
            })
        }),
    )
}

/// NodeUnstage twice (the repeat must succeed), checked: logged out and unmounted.
async fn unstage_and_check(
    r: &mut Report,
    co: &mut Co,
    v: &Volume,
    iqn: &str,
    check: &str,
) -> FlowResult {
    let first = co.unstage(v).await;
    let again = co.unstage(v).await;
    let gone = wait_until(10, || !iscsi_sessions().iter().any(|s| s == iqn)).await;
    r.check(
        check,
        first.and(again).and_then(|()| {
            ensure(gone, || {
                format!("session to {iqn} left: {:?}", iscsi_sessions())
            })?;
            ensure(mounted_fs(&v.staging).is_none(), || {
                format!("{} still mounted", v.staging.display())
            })
        }),
    )
}

/// ControllerExpandVolume to 128 MiB grows the LV and asks for node expansion;
/// NodeExpandVolume then grows the mounted ext4 (statvfs at the target path).
async fn expand(r: &mut Report, co: &mut Co, v: &Volume) -> FlowResult {
    let (before, _) = fs_size(&v.target)?;
    let want = 128 * MIB;
    let range = || {
        Some(CapacityRange {
            required_bytes: want,
            limit_bytes: 0,
        })
    };
    let resp = co
        .controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: v.id.clone(),
            capacity_range: range(),
            secrets: Default::default(),
            volume_capability: Some(v.capability.clone()),
        })
        .await;
    r.check(
        "csi-iscsi-controller-expand",
        resp.map_err(status).and_then(|resp| {
            let resp = resp.into_inner();
            ensure(
                resp.capacity_bytes >= want && resp.node_expansion_required,
                || format!("{resp:?}"),
            )?;
            let lv = device_size(&flows::lv_path(v))?;
            ensure(lv >= want as u64, || format!("LV of {lv} bytes"))
        }),
    )?;
    let resp = co
        .node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: v.id.clone(),
            volume_path: v.target.display().to_string(),
            capacity_range: range(),
            staging_target_path: v.staging.display().to_string(),
            volume_capability: Some(v.capability.clone()),
            secrets: Default::default(),
        })
        .await;
    r.check(
        "csi-iscsi-node-expand-grows-fs",
        resp.map_err(status).and_then(|_| {
            let (after, _) = fs_size(&v.target)?;
            ensure(after > before + 48 * MIB as u64, || {
                format!("filesystem of {before} bytes is {after} after NodeExpandVolume")
            })
        }),
    )
}

/// NodeGetVolumeStats at the target path: bytes and inodes, as statvfs sees them.
async fn stats(r: &mut Report, co: &mut Co, v: &Volume) -> FlowResult {
    let resp = co
        .node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: v.id.clone(),
            volume_path: v.target.display().to_string(),
            staging_target_path: v.staging.display().to_string(),
        })
        .await;
    let (total, _) = fs_size(&v.target)?;
    r.check(
        "csi-iscsi-volume-stats",
        resp.map_err(status).and_then(|resp| {
            let usage = resp.into_inner().usage;
            let bytes = usage.iter().find(|u| u.unit == Unit::Bytes as i32);
            let inodes = usage.iter().find(|u| u.unit == Unit::Inodes as i32);
            ensure(
                bytes.is_some_and(|b| {
                    (b.total as u64).abs_diff(total) <= total / 100
                        && b.used > 0
                        && b.available > 0
                        && b.used + b.available <= b.total
                }) && inodes.is_some_and(|i| i.total > 0 && i.used > 0),
                || format!("usage {usage:?}, statvfs total {total}"),
            )
        }),
    )
}
