//! Volumes (to be written).

use bpfman_csi::v1::{
    ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
    ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
    ControllerGetVolumeRequest, ControllerGetVolumeResponse, ControllerModifyVolumeRequest,
    ControllerModifyVolumeResponse, CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest,
    DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse, ListVolumesRequest,
    ListVolumesResponse, ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};
use tonic::Status;

use super::ControllerService;

/// `create_volume`.
pub async fn create_volume(
    _svc: &ControllerService,
    _req: CreateVolumeRequest,
) -> Result<CreateVolumeResponse, Status> {
    Err(Status::unimplemented("create_volume"))
}

/// `delete_volume`.
pub async fn delete_volume(
    _svc: &ControllerService,
    _req: DeleteVolumeRequest,
) -> Result<DeleteVolumeResponse, Status> {
    Err(Status::unimplemented("delete_volume"))
}

/// `validate_volume_capabilities`.
pub async fn validate_volume_capabilities(
    _svc: &ControllerService,
    _req: ValidateVolumeCapabilitiesRequest,
) -> Result<ValidateVolumeCapabilitiesResponse, Status> {
    Err(Status::unimplemented("validate_volume_capabilities"))
}

/// `list_volumes`.
pub async fn list_volumes(
    _svc: &ControllerService,
    _req: ListVolumesRequest,
) -> Result<ListVolumesResponse, Status> {
    Err(Status::unimplemented("list_volumes"))
}

/// `get_capacity`.
pub async fn get_capacity(
    _svc: &ControllerService,
    _req: GetCapacityRequest,
) -> Result<GetCapacityResponse, Status> {
    Err(Status::unimplemented("get_capacity"))
}

/// `controller_get_capabilities`.
pub async fn controller_get_capabilities(
    _svc: &ControllerService,
    _req: ControllerGetCapabilitiesRequest,
) -> Result<ControllerGetCapabilitiesResponse, Status> {
    Err(Status::unimplemented("controller_get_capabilities"))
}

/// `controller_expand_volume`.
pub async fn controller_expand_volume(
    _svc: &ControllerService,
    _req: ControllerExpandVolumeRequest,
) -> Result<ControllerExpandVolumeResponse, Status> {
    Err(Status::unimplemented("controller_expand_volume"))
}

/// `controller_get_volume`.
pub async fn controller_get_volume(
    _svc: &ControllerService,
    _req: ControllerGetVolumeRequest,
) -> Result<ControllerGetVolumeResponse, Status> {
    Err(Status::unimplemented("controller_get_volume"))
}

/// `controller_modify_volume`.
pub async fn controller_modify_volume(
    _svc: &ControllerService,
    _req: ControllerModifyVolumeRequest,
) -> Result<ControllerModifyVolumeResponse, Status> {
    Err(Status::unimplemented("controller_modify_volume"))
}
