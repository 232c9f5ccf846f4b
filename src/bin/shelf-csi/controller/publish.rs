//! Publish (to be written).

use bpfman_csi::v1::{
    ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
    ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse,
};
use tonic::Status;

use super::ControllerService;

/// `controller_publish_volume`.
pub async fn controller_publish_volume(
    _svc: &ControllerService,
    _req: ControllerPublishVolumeRequest,
) -> Result<ControllerPublishVolumeResponse, Status> {
    Err(Status::unimplemented("controller_publish_volume"))
}

/// `controller_unpublish_volume`.
pub async fn controller_unpublish_volume(
    _svc: &ControllerService,
    _req: ControllerUnpublishVolumeRequest,
) -> Result<ControllerUnpublishVolumeResponse, Status> {
    Err(Status::unimplemented("controller_unpublish_volume"))
}
