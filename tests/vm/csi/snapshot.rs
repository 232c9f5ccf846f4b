//! A snapshot of the staged iSCSI ext4 volume restored into a new volume on the same node:
//! CreateSnapshot (a thin snapshot of the LV), CreateVolume from it, and the restored
//! volume staged and published with the file written before the snapshot in it (the node
//! found a filesystem and did not format it), then everything deleted again.

use bpfman_csi::v1::volume_content_source::{SnapshotSource, Type};
use bpfman_csi::v1::{CreateSnapshotRequest, DeleteSnapshotRequest, VolumeContentSource};

use super::co::{status, Co, Volume, CHAP_SEALING_SECRET};
use super::flows::{self, FlowResult, GUEST_IQN, MIB};
use super::report::{ensure, mounted_fs, Report};

/// Snapshot `v` (staged and published, holding `file` with `text`), restore and check.
pub async fn restore(
    r: &mut Report,
    co: &mut Co,
    v: &Volume,
    node_id: &str,
    file: &str,
    text: &str,
) -> FlowResult {
    let snap = co
        .controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: v.id.clone(),
            name: "snapshot-pvc-iscsi-ext4".into(),
            ..Default::default()
        })
        .await;
    let snap = r.check(
        "csi-snapshot-create-ready",
        snap.map_err(status).and_then(|s| {
            let s = s.into_inner().snapshot.ok_or("no snapshot in the answer")?;
            ensure(s.ready_to_use && s.source_volume_id == v.id, || {
                format!("{s:?}")
            })?;
            Ok(s)
        }),
    )?;
    let source = VolumeContentSource {
        r#type: Some(Type::Snapshot(SnapshotSource {
            snapshot_id: snap.snapshot_id.clone(),
        })),
    };
    let params = [("protocol", "iscsi")];
    let name = "pvc-iscsi-restored";
    let restored = co
        .create_from(name, 64 * MIB, Some("ext4"), &params, Some(source))
        .await;
    let mut w = r.check("csi-snapshot-restore-create-volume", restored)?;
    let result = restored_steps(r, co, &mut w, node_id, file, text).await;
    if result.is_err() {
        co.tear_down(&w, node_id).await;
    }
    let deleted = co
        .controller
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            secrets: Default::default(),
        })
        .await;
    result?;
    r.check("csi-snapshot-delete", deleted.map(|_| ()).map_err(status))
}

async fn restored_steps(
    r: &mut Report,
    co: &mut Co,
    w: &mut Volume,
    node_id: &str,
    file: &str,
    text: &str,
) -> FlowResult {
    let check = "csi-snapshot-restored-publish-attaches";
    flows::controller_publish(r, co, check, w, node_id, GUEST_IQN).await?;
    let staged = co.stage(w, CHAP_SEALING_SECRET).await;
    let published = match staged {
        Ok(()) => co.publish(w).await,
        Err(e) => Err(format!("stage: {e}")),
    };
    let found = published.and_then(|()| flows::read(&w.target.join(file)));
    r.check(
        "csi-snapshot-restored-holds-data",
        found.and_then(|t| ensure(t == text, || format!("{file} holds {t:?}"))),
    )?;
    co.unpublish(w)
        .await
        .map_err(|e| format!("unpublish: {e}"))?;
    co.unstage(w).await.map_err(|e| format!("unstage: {e}"))?;
    r.check(
        "csi-snapshot-restored-unstaged",
        ensure(mounted_fs(&w.staging).is_none(), || "still mounted".into()),
    )?;
    flows::unpublish_and_delete(r, co, "csi-snapshot-restored", w, node_id).await
}
