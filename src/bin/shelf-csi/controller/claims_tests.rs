//! Unit tests of the per-volume claim: while one operation on a volume runs, DeleteVolume,
//! ControllerPublish/Unpublish, ControllerExpandVolume and CreateSnapshot of that volume
//! are ABORTED before they ask any appliance (the appliance here has no socket: a call
//! that got past the claim would be UNAVAILABLE).

use super::*;
use crate::config::Mode;
use bpfman_csi::v1::volume_capability::{AccessMode, AccessType, BlockVolume};
use bpfman_csi::v1::{CapacityRange, VolumeCapability};

const VOLUME: &str = "a1:0b0e6f1c-9d2e-4c1a-8f00-123456789abc";

fn service() -> ControllerService {
    let cfg = Config::parse(
        "[[appliance]]\nname = \"a1\"\nsocket = \"/nonexistent/shelf-csi-test.sock\"\n",
        Mode::Controller,
    )
    .unwrap();
    ControllerService::new(Arc::new(cfg))
}

fn block() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: 1 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

#[tokio::test]
async fn every_volume_operation_is_aborted_while_the_volume_is_claimed() {
    let svc = service();
    let id = crate::ids::Id::parse("volume_id", VOLUME).unwrap();
    let held = svc.claim_volume(&id).unwrap();
    let codes = [
        volumes::delete_volume(
            &svc,
            DeleteVolumeRequest {
                volume_id: VOLUME.into(),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()),
        publish::controller_publish_volume(
            &svc,
            ControllerPublishVolumeRequest {
                volume_id: VOLUME.into(),
                node_id: "host=n1".into(),
                volume_capability: Some(block()),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()),
        publish::controller_unpublish_volume(
            &svc,
            ControllerUnpublishVolumeRequest {
                volume_id: VOLUME.into(),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()),
        volumes::controller_expand_volume(
            &svc,
            ControllerExpandVolumeRequest {
                volume_id: VOLUME.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 1 << 30,
                    limit_bytes: 0,
                }),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()),
        snapshots::create_snapshot(
            &svc,
            CreateSnapshotRequest {
                name: "snap".into(),
                source_volume_id: VOLUME.into(),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()),
    ];
    for (i, r) in codes.into_iter().enumerate() {
        let e = r.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Aborted, "call {i}: {e:?}");
    }
    drop(held);
    // Released: the delete gets to the appliance (which cannot be reached here).
    let e = volumes::delete_volume(
        &svc,
        DeleteVolumeRequest {
            volume_id: VOLUME.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
}
