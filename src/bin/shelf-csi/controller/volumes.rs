//! DeleteVolume, ControllerExpandVolume, ValidateVolumeCapabilities and
//! ControllerGetVolume on the shares this plugin made (CreateVolume is create.rs; listing
//! and capacity listing.rs). A volume id names `<appliance>:<share id>`; a share without
//! `csi.name` metadata is no CSI volume and is treated as absent.

use bpfman_csi::v1::controller_get_volume_response::VolumeStatus;
use bpfman_csi::v1::validate_volume_capabilities_response::Confirmed;
use bpfman_csi::v1::{
    ControllerExpandVolumeRequest, ControllerExpandVolumeResponse, ControllerGetVolumeRequest,
    ControllerGetVolumeResponse, ControllerModifyVolumeRequest, ControllerModifyVolumeResponse,
    DeleteVolumeRequest, DeleteVolumeResponse, ValidateVolumeCapabilitiesRequest,
    ValidateVolumeCapabilitiesResponse,
};
use shelf::model::{Export, Share, SECTOR};
use shelf::proto::{ExportRef, Request, ShareDeleteArgs, ShareFilter, ShareResizeArgs};
use tonic::Status;

use super::clone::{self, CLONE_SNAPSHOT_PREFIX};
use super::create::{decode_share, volume_of};
use super::params::{self, Params, Protocol};
use super::ControllerService;
use crate::appliance::Appliance;
use crate::ids::Id;
use crate::objects::{self, META_PROTOCOL};

/// The volume an id names, NOT_FOUND when there is none (or it is no CSI volume).
async fn existing(
    svc: &ControllerService,
    what: &str,
    id: &str,
) -> Result<(Appliance, Share), Status> {
    let id = Id::parse(what, id)?;
    objects::csi_share(&svc.cfg, &id)
        .await?
        .ok_or_else(|| Status::not_found(format!("volume {id}: no such volume")))
}

/// The protocol a volume was made for.
fn protocol_of(share: &Share) -> Protocol {
    share
        .metadata
        .get(META_PROTOCOL)
        .and_then(|p| Protocol::parse(p))
        .unwrap_or(Protocol::Iscsi)
}

/// `DeleteVolume`: OK when the volume is gone (or the id is none this plugin made);
/// FAILED_PRECONDITION while it is published to a node (shelf attachments) or has
/// snapshots; ABORTED while another operation on the volume runs (the claim keeps a
/// publish from attaching it meanwhile). Exports left from earlier publishes are deleted
/// first without `force`, so shelfd itself refuses (`has_dependents`) an export a node
/// is attached to; transient clone snapshots (clone.rs) are deleted too. The share goes
/// without `force`.
pub async fn delete_volume(
    svc: &ControllerService,
    req: DeleteVolumeRequest,
) -> Result<DeleteVolumeResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    let Ok(id) = Id::parse("volume_id", &req.volume_id) else {
        return Ok(DeleteVolumeResponse {});
    };
    let _claim = svc.claim_volume(&id)?;
    let Some((a, share)) = objects::csi_share(&svc.cfg, &id).await? else {
        log::info!("DeleteVolume {id}: already gone");
        return Ok(DeleteVolumeResponse {});
    };
    let list = Request::AttachmentList(ShareFilter {
        share: Some(share.id.clone()),
        pool: None,
    });
    let attached: Vec<shelf::model::Attachment> = objects::decode(&a, a.call(list).await?)?;
    if let Some(at) = attached.first() {
        return Err(published(&id, &at.host, attached.len()));
    }
    delete_exports(&a, &id, &share).await?;
    for s in objects::snapshots(&a, Some(&share.id)).await? {
        if s.name.starts_with(CLONE_SNAPSHOT_PREFIX) {
            clone::delete_transient(&a, &s.id).await;
        }
    }
    let delete = Request::ShareDelete(ShareDeleteArgs {
        share: share.id.clone(),
        pool: None,
        recursive: false,
        force: false,
    });
    match objects::found(a.call(delete).await) {
        Ok(_) => {}
        Err(e) if e.code() == tonic::Code::FailedPrecondition => {
            return Err(Status::failed_precondition(format!(
                "volume {id} has snapshots or exports; delete them first ({})",
                e.message()
            )))
        }
        Err(e) => return Err(e),
    }
    log::info!("DeleteVolume {id}: share {} deleted", share.name);
    Ok(DeleteVolumeResponse {})
}

/// FAILED_PRECONDITION: the volume is published.
fn published(id: &Id, host: &str, count: usize) -> Status {
    Status::failed_precondition(format!(
        "volume {id} is published to {host} ({count} attachment(s)); unpublish it first"
    ))
}

/// Delete the share's exports without `force`: shelfd refuses (`has_dependents`,
/// FAILED_PRECONDITION) one that is attached, so no attached node loses its volume.
async fn delete_exports(a: &Appliance, id: &Id, share: &Share) -> Result<(), Status> {
    let list = Request::ExportList(ShareFilter {
        share: Some(share.id.clone()),
        pool: None,
    });
    let Some(v) = objects::found(a.call(list).await)? else {
        return Ok(());
    };
    let exports: Vec<Export> = objects::decode(a, v)?;
    for e in exports {
        if let Some(at) = e.attached.first() {
            return Err(published(id, &at.client, e.attached.len()));
        }
        let delete = Request::ExportDelete(ExportRef {
            export: Some(e.id.clone()),
            share: None,
            pool: None,
            protocol: None,
            force: false,
        });
        match objects::found(a.call(delete).await) {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                return Err(Status::failed_precondition(format!(
                    "volume {id} is published (its {} export is attached): {}",
                    e.protocol.as_str(),
                    s.message()
                )))
            }
            Err(s) => return Err(s),
        }
    }
    Ok(())
}

/// `ControllerExpandVolume`: `share.resize` to `required_bytes` (rounded up to 512 bytes)
/// unless the volume is already that big. Node expansion is required for every iSCSI/NVMe
/// volume, raw block too: the node rescans the session so the disk shows its new size, and
/// grows a mount volume's filesystem; shelfd grows an NFS volume's filesystem itself.
pub async fn controller_expand_volume(
    svc: &ControllerService,
    req: ControllerExpandVolumeRequest,
) -> Result<ControllerExpandVolumeResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    let range = req
        .capacity_range
        .as_ref()
        .filter(|r| r.required_bytes > 0 || r.limit_bytes > 0)
        .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
    let _claim = svc.claim_volume(&Id::parse("volume_id", &req.volume_id)?)?;
    let (a, share) = existing(svc, "volume_id", &req.volume_id).await?;
    let protocol = protocol_of(&share);
    // The node rescans an iSCSI/NVMe session so the disk sees its new size (and grows the
    // filesystem of a mount volume); shelfd grows an NFS volume's filesystem itself.
    let node_expansion_required = protocol != Protocol::Nfs;
    let size = params::size_for(Some(range), share.size, SECTOR)?;
    let share = if share.size >= size {
        share
    } else {
        let grow = Request::ShareResize(ShareResizeArgs {
            share: share.id.clone(),
            size,
            pool: None,
        });
        let v = a.call(grow).await?;
        if let Some(w) = shelf::client::get(&v, "warnings") {
            log::warn!("ControllerExpandVolume {}: {w:?}", req.volume_id);
        }
        decode_share(&a, &v)?
    };
    Ok(ControllerExpandVolumeResponse {
        capacity_bytes: i64::try_from(share.size).unwrap_or(i64::MAX),
        node_expansion_required,
    })
}

/// `ValidateVolumeCapabilities`: NOT_FOUND for no such volume; `confirmed` only when every
/// capability (and the parameters, when given) fits the volume as it was made.
pub async fn validate_volume_capabilities(
    svc: &ControllerService,
    req: ValidateVolumeCapabilitiesRequest,
) -> Result<ValidateVolumeCapabilitiesResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    if req.volume_capabilities.is_empty() {
        return Err(Status::invalid_argument("volume_capabilities are required"));
    }
    let (_, share) = existing(svc, "volume_id", &req.volume_id).await?;
    let protocol = protocol_of(&share);
    let verdict = match Params::parse(&req.parameters) {
        Err(e) => Err(e.message().to_string()),
        Ok(p) if p.protocol.is_some_and(|q| q != protocol) => {
            Err(format!("the volume is {}", protocol.as_str()))
        }
        Ok(p) => {
            params::check_capabilities(&req.volume_capabilities, protocol, p.fs_type.as_deref())
                .and_then(|needs| {
                    if needs.multiattach && !share.multiattach {
                        Err(
                            "the volume is single-node (made without a multi-node access mode)"
                                .into(),
                        )
                    } else {
                        Ok(())
                    }
                })
        }
    };
    Ok(match verdict {
        Ok(()) => ValidateVolumeCapabilitiesResponse {
            confirmed: Some(Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: Default::default(),
            }),
            message: String::new(),
        },
        Err(message) => ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message,
        },
    })
}

/// `ControllerGetVolume`: the volume as ListVolumes shows it; NOT_FOUND when gone.
pub async fn controller_get_volume(
    svc: &ControllerService,
    req: ControllerGetVolumeRequest,
) -> Result<ControllerGetVolumeResponse, Status> {
    let (a, share) = existing(svc, "volume_id", &req.volume_id).await?;
    Ok(ControllerGetVolumeResponse {
        volume: Some(volume_of(&a, &share)),
        status: Some(VolumeStatus::default()),
    })
}

/// `ControllerModifyVolume`: not offered (MODIFY_VOLUME is not advertised).
pub async fn controller_modify_volume(
    _svc: &ControllerService,
    _req: ControllerModifyVolumeRequest,
) -> Result<ControllerModifyVolumeResponse, Status> {
    Err(Status::unimplemented(
        "ControllerModifyVolume: shelf volumes have no mutable parameters",
    ))
}
