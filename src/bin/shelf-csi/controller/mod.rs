//! The Controller service: volumes (`volumes.rs`), snapshots (`snapshots.rs`) and
//! publishing (`publish.rs`) on the configured appliances. This file only routes each RPC.

use std::sync::Arc;

use bpfman_csi::v1::controller_server::Controller;
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

mod publish;
mod snapshots;
mod volumes;

/// The Controller service (to be written).
#[derive(Debug)]
pub struct ControllerService {
    /// The plugin config (the appliances).
    pub cfg: Arc<Config>,
}

impl ControllerService {
    /// The service for `cfg`.
    pub fn new(cfg: Arc<Config>) -> ControllerService {
        ControllerService { cfg }
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        volumes::create_volume(self, req.into_inner())
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
        volumes::list_volumes(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn get_capacity(
        &self,
        req: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        volumes::get_capacity(self, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn controller_get_capabilities(
        &self,
        req: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        volumes::controller_get_capabilities(self, req.into_inner())
            .await
            .map(Response::new)
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
