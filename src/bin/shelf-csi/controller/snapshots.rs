//! Snapshots (to be written).

use bpfman_csi::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, DeleteSnapshotRequest, DeleteSnapshotResponse,
    ListSnapshotsRequest, ListSnapshotsResponse,
};
use tonic::Status;

use super::ControllerService;

/// `create_snapshot`.
pub async fn create_snapshot(
    _svc: &ControllerService,
    _req: CreateSnapshotRequest,
) -> Result<CreateSnapshotResponse, Status> {
    Err(Status::unimplemented("create_snapshot"))
}

/// `delete_snapshot`.
pub async fn delete_snapshot(
    _svc: &ControllerService,
    _req: DeleteSnapshotRequest,
) -> Result<DeleteSnapshotResponse, Status> {
    Err(Status::unimplemented("delete_snapshot"))
}

/// `list_snapshots`.
pub async fn list_snapshots(
    _svc: &ControllerService,
    _req: ListSnapshotsRequest,
) -> Result<ListSnapshotsResponse, Status> {
    Err(Status::unimplemented("list_snapshots"))
}
