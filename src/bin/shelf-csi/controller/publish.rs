//! ControllerPublishVolume and ControllerUnpublishVolume: `share.attach` and `share.detach`
//! of the volume's share for the node the node id describes (nodeid.rs), over the volume's
//! protocol. The publish context is `connection_info` in context.rs's keys, with the CHAP
//! secret sealed for the volume and node (seal.rs) under the publish secrets' `chapKey`.
//! No secret is logged or put into an error.

use std::collections::HashMap;

use bpfman_csi::v1::{
    ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
    ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse,
};
use shelf::client::get;
use shelf::model::{Access, Attachment, Connector, Layout, Protocol, Share};
use shelf::proto::{AttachArgs, ExportCreateArgs, Request, ShareFilter};
use tonic::Status;

use super::ControllerService;
use crate::appliance::Appliance;
use crate::ids::Id;
use crate::nodeid::NodeId;
use crate::objects::{self, found};
use crate::seal::{self, CHAP_KEY};

mod connection;
mod read_only;

use connection::{For, Refusal};
use read_only::{check_read_only, mark_read_only};

/// The volume_context key CreateVolume sets with the protocol (a fallback for a share
/// whose metadata lacks [`objects::META_PROTOCOL`]).
const CONTEXT_PROTOCOL: &str = "protocol";

/// `ControllerPublishVolume`: see the module comment. `readonly` puts `access_mode=ro` in
/// the context whatever the protocol (an iSCSI/NVMe volume is attached read-write on
/// shelf, the node enforces read-only). A volume attached to another node and not
/// multi-attach is FAILED_PRECONDITION; attached to this node with the other
/// read-only flag, ALREADY_EXISTS (CSI spec); attached the same way again, the same
/// context.
pub async fn controller_publish_volume(
    svc: &ControllerService,
    req: ControllerPublishVolumeRequest,
) -> Result<ControllerPublishVolumeResponse, Status> {
    for (what, v) in [("volume_id", &req.volume_id), ("node_id", &req.node_id)] {
        if v.is_empty() {
            return Err(Status::invalid_argument(format!("{what} is required")));
        }
    }
    if req.volume_capability.is_none() {
        return Err(Status::invalid_argument("volume_capability is required"));
    }
    let volume = Id::parse("volume_id", &req.volume_id)?;
    let _claim = svc.claim_volume(&volume)?;
    let Some((appliance, share)) = objects::csi_share(&svc.cfg, &volume).await? else {
        return Err(Status::not_found(format!(
            "volume {volume}: no such volume"
        )));
    };
    let node = match NodeId::decode(&req.node_id) {
        Ok(node) => node,
        Err(why) => return Err(unknown_node(&appliance, &share, why).await),
    };
    let protocol = protocol_of(&share, &req.volume_context)?;
    // shelf attaches iSCSI and NVMe/TCP volumes read-write only: a read-only publish of
    // one is attached read-write and the node is told `access_mode=ro` (it mounts `ro`,
    // binds a block volume through a read-only loop device). NFS exports it read-only.
    let mode = if req.readonly && protocol == Protocol::Nfs {
        Access::Ro
    } else {
        Access::Rw
    };
    check_node_can(protocol, &node)?;
    let key = req.secrets.get(CHAP_KEY).map(String::as_str);
    if key.is_some_and(|k| k.len() < seal::MIN_KEY_BYTES) {
        return Err(Status::failed_precondition(
            seal::SealError::KeyTooShort.to_string(),
        ));
    }
    let attached_here = check_attachments(&appliance, &share, &node, mode).await?;
    if protocol != Protocol::Nfs && attached_here {
        check_read_only(&share, &node.host, req.readonly)?;
    }
    if protocol == Protocol::Nfs {
        ensure_nfs_export(&appliance, &share).await?;
    }
    let attach = Request::ShareAttach(AttachArgs {
        share: share.id.clone(),
        pool: None,
        connector: node.connector(),
        protocol: Some(protocol),
        mode: Some(mode),
    });
    let answer = match appliance.call(attach).await {
        Ok(answer) => answer,
        Err(e) if e.code() == tonic::Code::Aborted && !share.multiattach => {
            let others = attachments(&appliance, &share.id).await.unwrap_or_default();
            return Err(attach_refusal(e, &others, &node.host));
        }
        Err(e) => return Err(e),
    };
    let changed = matches!(get(&answer, "changed"), Some(ciborium::Value::Bool(true)));
    let info = get(&answer, "connection_info")
        .ok_or_else(|| Status::internal("share.attach answered no connection_info"))?;
    let ids = For {
        volume_id: &req.volume_id,
        node_id: &req.node_id,
        key,
    };
    match connection::publish_context(info, &ids) {
        Ok(mut publish_context) => {
            if req.readonly {
                publish_context.insert(crate::context::ACCESS_MODE.into(), "ro".into());
            }
            if protocol != Protocol::Nfs {
                mark_read_only(&appliance, &share, &node.host, req.readonly).await?;
            }
            log::info!(
                "ControllerPublishVolume {volume} to {} ({mode:?})",
                node.host
            );
            Ok(ControllerPublishVolumeResponse { publish_context })
        }
        Err(refusal) => {
            if changed {
                // Do not leave the node granted a volume it was not told how to reach.
                detach(&appliance, &share.id, protocol, node.connector()).await?;
            }
            Err(match refusal {
                Refusal::NoKey => Status::failed_precondition(format!(
                    "volume {volume}'s iSCSI export has CHAP, and the publish secrets have no \
                     {CHAP_KEY:?}: set the StorageClass parameters \
                     csi.storage.k8s.io/controller-publish-secret-name/-namespace and \
                     node-stage-secret-name/-namespace to one Secret holding {CHAP_KEY:?} \
                     (docs/csi.md, CHAP)"
                )),
                Refusal::Status(s) => s,
            })
        }
    }
}

/// The answer for a node id this plugin did not make: NOT_FOUND, unless the volume is
/// single-attach and published to a node already, which the spec puts first
/// (FAILED_PRECONDITION, as csi-sanity checks with a made-up second node).
async fn unknown_node(appliance: &Appliance, share: &Share, why: String) -> Status {
    if !share.multiattach {
        match attachments(appliance, &share.id).await {
            Ok(list) if !list.is_empty() => {
                return Status::failed_precondition(format!(
                    "volume is published to node {} and is single-attach",
                    list[0].host
                ))
            }
            Ok(_) => {}
            Err(e) => return e,
        }
    }
    Status::not_found(why)
}

/// The volume's protocol: the share's metadata, else the volume context, else what its
/// layout allows (a filesystem share is served over NFS, a block share over iSCSI).
fn protocol_of(share: &Share, context: &HashMap<String, String>) -> Result<Protocol, Status> {
    let named = share
        .metadata
        .get(objects::META_PROTOCOL)
        .or_else(|| context.get(CONTEXT_PROTOCOL));
    match named.map(String::as_str) {
        Some("iscsi") => Ok(Protocol::Iscsi),
        Some("nfs") => Ok(Protocol::Nfs),
        Some("nvme") => Ok(Protocol::Nvme),
        Some(other) => Err(Status::internal(format!(
            "volume's protocol {other:?} is none of iscsi, nfs, nvme"
        ))),
        None if share.layout == Layout::Filesystem => Ok(Protocol::Nfs),
        None => Ok(Protocol::Iscsi),
    }
}

/// `iscsi`, `nfs` or `nvme`.
fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Iscsi => "iscsi",
        Protocol::Nfs => "nfs",
        Protocol::Nvme => "nvme",
    }
}

/// A node must have the client name the protocol grants access to.
fn check_node_can(protocol: Protocol, node: &NodeId) -> Result<(), Status> {
    let missing = match protocol {
        Protocol::Iscsi if node.initiator.is_none() => "an iSCSI initiator name (open-iscsi)",
        Protocol::Nvme if node.nqn.is_none() => "an NVMe host NQN (nvme-cli)",
        _ => return Ok(()),
    };
    Err(Status::failed_precondition(format!(
        "node {} has no {missing}, which its {} volumes need",
        node.host,
        protocol_name(protocol)
    )))
}

/// An NFS volume's export, made before its first attach with `no_root_squash` (clients
/// `[]`: attached nodes only). The filesystem shelfd made is root's with mode 0755, so
/// under the `root_squash` an attach would export with, no pod could write to the volume,
/// whatever its uid, and kubelet could not apply a pod's fsGroup (found by the VM tier's
/// `csi-nfs-pod-writes`). An export already there with other settings (ALREADY_EXISTS) is
/// left as it is.
async fn ensure_nfs_export(appliance: &Appliance, share: &Share) -> Result<(), Status> {
    let create = Request::ExportCreate(ExportCreateArgs {
        share: share.id.clone(),
        protocol: Protocol::Nfs,
        driver: None,
        pool: None,
        clients: Some(vec![]),
        access: None,
        sync: None,
        root_squash: Some(false),
        chap: None,
    });
    match appliance.call(create).await {
        Err(s) if s.code() != tonic::Code::AlreadyExists => Err(s),
        _ => Ok(()),
    }
}

/// The share's attachments.
async fn attachments(appliance: &Appliance, share: &str) -> Result<Vec<Attachment>, Status> {
    let list = Request::AttachmentList(ShareFilter {
        share: Some(share.to_string()),
        pool: None,
    });
    objects::decode(appliance, appliance.call(list).await?)
}

/// FAILED_PRECONDITION when a single-attach share is attached to another node,
/// ALREADY_EXISTS when it is attached to this one with the other mode; whether it is
/// attached to this one.
async fn check_attachments(
    appliance: &Appliance,
    share: &Share,
    node: &NodeId,
    mode: Access,
) -> Result<bool, Status> {
    let mut here = false;
    for a in attachments(appliance, &share.id).await? {
        if a.host == node.host {
            here = true;
            if a.mode != mode {
                return Err(Status::already_exists(format!(
                    "volume is already published to node {} {:?}, not {mode:?}",
                    node.host, a.mode
                )));
            }
        } else if !share.multiattach {
            return Err(Status::failed_precondition(format!(
                "volume is published to node {} and is single-attach; unpublish it there first",
                a.host
            )));
        }
    }
    Ok(here)
}

/// A `busy` (ABORTED) refusal of `share.attach` of a single-attach share: when another
/// node holds it (attached past [`check_attachments`], by a call racing this one),
/// FAILED_PRECONDITION as the spec asks for a volume published elsewhere; else the same.
fn attach_refusal(e: Status, attachments: &[Attachment], host: &str) -> Status {
    match attachments.iter().find(|a| a.host != host) {
        Some(other) => Status::failed_precondition(format!(
            "volume is published to node {} and is single-attach; unpublish it there first \
             ({})",
            other.host,
            e.message()
        )),
        None => e,
    }
}

/// `share.detach` of one connector; a share gone meanwhile is done.
async fn detach(
    appliance: &Appliance,
    share: &str,
    protocol: Protocol,
    connector: Connector,
) -> Result<(), Status> {
    let req = Request::ShareDetach(AttachArgs {
        share: share.to_string(),
        pool: None,
        connector,
        protocol: Some(protocol),
        mode: None,
    });
    found(appliance.call(req).await).map(|_| ())
}

/// The connector that made `a` (for NVMe/TCP its client is the host NQN).
fn connector_of(a: &Attachment) -> Connector {
    Connector {
        host: a.host.clone(),
        ip: a.ip.clone(),
        initiator: a.initiator.clone(),
        nqn: (a.protocol == Protocol::Nvme).then(|| a.client.clone()),
    }
}

/// `ControllerUnpublishVolume`: `share.detach` of every attachment of the node (of every
/// node when `node_id` is empty, as the spec asks). OK when the volume is gone or the node
/// or volume id is none this plugin made (it cannot be published then).
pub async fn controller_unpublish_volume(
    svc: &ControllerService,
    req: ControllerUnpublishVolumeRequest,
) -> Result<ControllerUnpublishVolumeResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    let done = Ok(ControllerUnpublishVolumeResponse {});
    let Ok(volume) = Id::parse("volume_id", &req.volume_id) else {
        return done;
    };
    let _claim = svc.claim_volume(&volume)?;
    let host = match req.node_id.as_str() {
        "" => None,
        text => match NodeId::decode(text) {
            Ok(node) => Some(node.host),
            Err(_) => return done,
        },
    };
    let Some((appliance, share)) = objects::csi_share(&svc.cfg, &volume).await? else {
        return done;
    };
    let Some(list) = found(attachments(&appliance, &share.id).await)? else {
        return done;
    };
    for a in list
        .iter()
        .filter(|a| host.as_ref().is_none_or(|h| *h == a.host))
    {
        detach(&appliance, &share.id, a.protocol, connector_of(a)).await?;
        mark_read_only(&appliance, &share, &a.host, false).await?;
        log::info!("ControllerUnpublishVolume {volume} from {}", a.host);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached_to(host: &str) -> Attachment {
        Attachment {
            id: "at1".into(),
            share: "s1".into(),
            share_name: "pvc-1".into(),
            protocol: Protocol::Iscsi,
            client: format!("iqn.2026-12.org.example:{host}"),
            host: host.into(),
            ip: None,
            initiator: None,
            mode: Access::Rw,
            created_at: 0,
        }
    }

    #[test]
    fn a_busy_attach_of_a_volume_held_by_another_node_is_failed_precondition() {
        let busy = || Status::aborted("appliance a1: busy: share pvc-1 is single-attach");
        let e = attach_refusal(busy(), &[attached_to("n2")], "n1");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("n2"), "{}", e.message());
        // Busy for another reason (nothing attached elsewhere): still ABORTED, retried.
        for list in [vec![], vec![attached_to("n1")]] {
            assert_eq!(
                attach_refusal(busy(), &list, "n1").code(),
                tonic::Code::Aborted
            );
        }
    }
}
