//! A shelf share as the CSI volume the controller answers: its id, size, volume_context
//! (`protocol`, and `fsType` for an iSCSI/NVMe mount volume, which NodeStageVolume reads)
//! and accessible topology (its appliance's segment).

use std::collections::HashMap;

use bpfman_csi::v1::{CreateVolumeRequest, Volume};
use shelf::model::Share;
use tonic::Status;

use super::create::META_FSTYPE;
use super::placement;
use crate::appliance::Appliance;
use crate::ids::Id;
use crate::objects::{self, META_PROTOCOL};

/// volume_context key: the protocol (`iscsi`, `nfs`, `nvme`).
pub const CONTEXT_PROTOCOL: &str = "protocol";
/// volume_context key: the filesystem the node makes on an iSCSI/NVMe mount volume.
pub const CONTEXT_FS_TYPE: &str = "fsType";

/// The `share` of a `{share, changed}` answer.
pub fn decode_share(a: &Appliance, v: &ciborium::Value) -> Result<Share, Status> {
    match shelf::client::get(v, "share") {
        Some(s) => objects::decode(a, s.clone()),
        None => Err(Status::internal(format!(
            "appliance {}: answer without share",
            a.name
        ))),
    }
}

/// The CSI volume of `share` on `a`: id, size, context, source, and its segment only when
/// the CO asked for topology. The external-provisioner turns `accessible_topology` into
/// the PV's node affinity: answered to a request without accessibility requirements
/// (no node reports `topology.shelf.io/node`, since every worker reaches every
/// appliance), it would pin the volume to nodes that do not exist.
pub fn volume(a: &Appliance, share: &Share, req: &CreateVolumeRequest) -> Volume {
    let asked = req
        .accessibility_requirements
        .as_ref()
        .is_some_and(|t| !t.requisite.is_empty() || !t.preferred.is_empty());
    let mut v = volume_of(a, share);
    if !asked {
        v.accessible_topology.clear();
    }
    Volume {
        content_source: req.volume_content_source.clone(),
        ..v
    }
}

/// The CSI volume of `share` on `a` as listings show it (no content source).
pub fn volume_of(a: &Appliance, share: &Share) -> Volume {
    let mut context = HashMap::new();
    if let Some(p) = share.metadata.get(META_PROTOCOL) {
        context.insert(CONTEXT_PROTOCOL.to_string(), p.clone());
    }
    if let Some(fs) = share.metadata.get(META_FSTYPE) {
        context.insert(CONTEXT_FS_TYPE.to_string(), fs.clone());
    }
    Volume {
        capacity_bytes: i64::try_from(share.size).unwrap_or(i64::MAX),
        volume_id: Id::new(&a.name, &share.id).to_string(),
        volume_context: context,
        content_source: None,
        accessible_topology: vec![placement::segment(&a.name)],
    }
}
