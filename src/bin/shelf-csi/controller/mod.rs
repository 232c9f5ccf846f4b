//! The Controller service: volumes (`create.rs` with `clone.rs`, `placement.rs`,
//! `pending.rs` and `params.rs`; `volumes.rs`; `listing.rs`; `view.rs`), snapshots
//! (`snapshots.rs`) and publishing (`publish.rs`) on the configured appliances. This file
//! routes each RPC and says which capabilities the service has.

use std::sync::Arc;

use bpfman_csi::v1::controller_server::Controller;
use bpfman_csi::v1::controller_service_capability::{self, rpc::Type as Rpc};
use bpfman_csi::v1::ControllerServiceCapability;
use bpfman_csi::v1::{
    ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
    ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
    ControllerGetVolumeRequest, ControllerGetVolumeResponse, ControllerModifyVolumeRequest,
    ControllerModifyVolumeResponse, ControllerPublishVolumeRequest,
    ControllerPublishVolumeResponse, ControllerUnpublishVolumeRequest,
    ControllerUnpublishVolumeResponse, CreateSnapshotRequest, CreateSnapshotResponse,
    CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest, DeleteSnapshotResponse,
    DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse,
    ListSnapshotsRequest, ListSnapshotsResponse, ListVolumesRequest, ListVolumesResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};
use tonic::{Request, Response, Status};

use crate::config::Config;

mod clone;
mod create;
mod listing;
mod params;
mod pending;
mod placement;
mod publish;
mod snapshots;
mod view;
mod volumes;

/// The Controller service.
#[derive(Debug)]
pub struct ControllerService {
    /// The plugin config (the appliances).
    pub cfg: Arc<Config>,
    /// The CSI names whose CreateVolume is running (a second one is ABORTED).
    pending: pending::Pending,
    /// The volume ids a DeleteVolume, ControllerPublish/Unpublish, ControllerExpandVolume or
    /// CreateSnapshot works on: one at a time per volume, the others ABORTED.
    volumes: pending::Pending,
}

impl ControllerService {
    /// The service for `cfg`.
    pub fn new(cfg: Arc<Config>) -> ControllerService {
        ControllerService {
            cfg,
            pending: pending::Pending::new("a CreateVolume for"),
            volumes: pending::Pending::new("an operation on volume"),
        }
    }

    /// Claim volume `id` for one operation (see [`ControllerService::volumes`]): ABORTED
    /// while another operation on it runs.
    fn claim_volume(&self, id: &crate::ids::Id) -> Result<pending::Claim<'_>, Status> {
        self.volumes.claim(&id.to_string())
    }
}

/// The controller's capabilities: exactly what works. Not advertised:
/// LIST_VOLUMES_PUBLISHED_NODES and GET_VOLUME's published nodes (node ids are not kept),
/// VOLUME_CONDITION, MODIFY_VOLUME (no mutable parameters).
const CAPABILITIES: [Rpc; 11] = [
    Rpc::CreateDeleteVolume,
    Rpc::PublishUnpublishVolume,
    Rpc::PublishReadonly,
    Rpc::ListVolumes,
    Rpc::GetCapacity,
    Rpc::CreateDeleteSnapshot,
    Rpc::ListSnapshots,
    Rpc::CloneVolume,
    Rpc::ExpandVolume,
    Rpc::GetVolume,
    Rpc::SingleNodeMultiWriter,
];

/// `ControllerGetCapabilities`.
fn capabilities() -> ControllerGetCapabilitiesResponse {
    let capabilities = CAPABILITIES
        .iter()
        .map(|r| ControllerServiceCapability {
            r#type: Some(controller_service_capability::Type::Rpc(
                controller_service_capability::Rpc { r#type: *r as i32 },
            )),
        })
        .collect();
    ControllerGetCapabilitiesResponse { capabilities }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        create::create_volume(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn delete_volume(
        &self,
        req: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        volumes::delete_volume(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn controller_publish_volume(
        &self,
        req: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        publish::controller_publish_volume(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn controller_unpublish_volume(
        &self,
        req: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        publish::controller_unpublish_volume(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn validate_volume_capabilities(
        &self,
        req: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        volumes::validate_volume_capabilities(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_volumes(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        listing::list_volumes(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn get_capacity(
        &self,
        req: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        listing::get_capacity(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn controller_get_capabilities(
        &self,
        _req: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(capabilities()))
    }
    async fn create_snapshot(
        &self,
        req: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        snapshots::create_snapshot(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn delete_snapshot(
        &self,
        req: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        snapshots::delete_snapshot(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_snapshots(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        snapshots::list_snapshots(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn controller_expand_volume(
        &self,
        req: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        volumes::controller_expand_volume(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn controller_get_volume(
        &self,
        req: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        volumes::controller_get_volume(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn controller_modify_volume(
        &self,
        req: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        volumes::controller_modify_volume(self, req.into_inner())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod claims_tests;
