//! The Node service (to be written).

use std::sync::Arc;

use bpfman_csi::v1::node_server::Node;
use bpfman_csi::v1::{
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
    NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse,
    NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
    NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
    NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
    NodeUnstageVolumeResponse,
};
use tonic::{Request, Response, Status};

use crate::config::Config;

/// The Node service (to be written).
#[derive(Debug)]
pub struct NodeService {
    #[allow(dead_code)]
    cfg: Arc<Config>,
}

impl NodeService {
    /// The service for `cfg`.
    pub fn new(cfg: Arc<Config>) -> Result<NodeService, String> {
        Ok(NodeService { cfg })
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _req: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("node_stage_volume"))
    }
    async fn node_unstage_volume(
        &self,
        _req: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("node_unstage_volume"))
    }
    async fn node_publish_volume(
        &self,
        _req: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        Err(Status::unimplemented("node_publish_volume"))
    }
    async fn node_unpublish_volume(
        &self,
        _req: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented("node_unpublish_volume"))
    }
    async fn node_get_volume_stats(
        &self,
        _req: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("node_get_volume_stats"))
    }
    async fn node_expand_volume(
        &self,
        _req: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("node_expand_volume"))
    }
    async fn node_get_capabilities(
        &self,
        _req: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Err(Status::unimplemented("node_get_capabilities"))
    }
    async fn node_get_info(
        &self,
        _req: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Err(Status::unimplemented("node_get_info"))
    }
}
