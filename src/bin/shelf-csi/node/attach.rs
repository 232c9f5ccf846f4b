//! Reaching a volume from this machine, by publish_context's `protocol` (context.rs): what
//! the controller's publish said ([`transport_of`]), and the attach and detach of each
//! protocol (iSCSI login with CHAP, NVMe/TCP connect; NFS needs neither, its mount is the
//! presentation).

use std::collections::HashMap;
use std::path::PathBuf;

use tonic::Status;
use zeroize::Zeroizing;

use super::iscsi::{self, Chap};
use super::state::{Staged, Transport};
use super::{checked, nvme, request, NodeCtx};
use crate::{context, seal};

/// How long to wait for an NVMe namespace to appear after connecting.
const NVME_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The transport publish_context describes (`protocol` from publish_context, else from
/// volume_context; each protocol's keys required).
pub fn transport_of(
    publish: &HashMap<String, String>,
    volume: &HashMap<String, String>,
) -> Result<Transport, Status> {
    let what = "publish_context";
    let protocol = publish
        .get(context::PROTOCOL)
        .or_else(|| volume.get(context::PROTOCOL))
        .map(String::as_str)
        .unwrap_or_default();
    match protocol {
        "iscsi" => {
            let lun = request::required(publish, what, context::TARGET_LUN)?;
            let portal = request::required(publish, what, context::TARGET_PORTAL)?;
            iscsi::split_portal(portal)?;
            let iqn = request::required(publish, what, context::TARGET_IQN)?;
            checked::iqn(context::TARGET_IQN, iqn)?;
            Ok(Transport::Iscsi {
                portal: portal.to_string(),
                iqn: iqn.to_string(),
                lun: lun.parse().map_err(|_| {
                    Status::invalid_argument(format!(
                        "publish_context: target_lun {lun:?} is not a number"
                    ))
                })?,
            })
        }
        "nvme" => {
            let nqn = request::required(publish, what, context::TARGET_NQN)?;
            checked::nqn(context::TARGET_NQN, nqn)?;
            let address = request::required(publish, what, context::NVME_ADDRESS)?;
            let port = request::required(publish, what, context::NVME_PORT)?;
            checked::nvme_portal(context::NVME_ADDRESS, address, context::NVME_PORT, port)?;
            let nguid = request::required(publish, what, context::NVME_NGUID)?;
            checked::nguid(context::NVME_NGUID, nguid)?;
            Ok(Transport::Nvme {
                nqn: nqn.to_string(),
                address: address.to_string(),
                port: port.to_string(),
                nguid: nguid.to_string(),
            })
        }
        "nfs" => {
            let export = request::required(publish, what, context::NFS_EXPORT)?;
            checked::nfs_export(context::NFS_EXPORT, export)?;
            Ok(Transport::Nfs {
                export: export.to_string(),
            })
        }
        "" => Err(Status::invalid_argument(
            "publish_context has no protocol (was the volume published by this driver?)",
        )),
        other => Err(Status::invalid_argument(format!(
            "protocol {other:?}: this node serves iscsi, nvme and nfs"
        ))),
    }
}

/// The CHAP credentials of an iSCSI publish, when it has CHAP: the user from
/// publish_context, the secret opened from its sealed form with the key in the stage
/// secrets (seal.rs). Nothing of the secret or the key is ever in an error.
pub fn chap_of(
    node: &NodeCtx,
    volume_id: &str,
    publish: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
) -> Result<Option<Chap>, Status> {
    let Some(user) = publish.get(context::CHAP_USER).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    checked::chap_word(context::CHAP_USER, user, true)?;
    let sealed = request::required(publish, "publish_context", context::CHAP_SECRET_SEALED)?;
    let key = secrets.get(seal::CHAP_KEY).ok_or_else(|| {
        Status::invalid_argument(format!(
            "the volume has CHAP but NodeStageVolume's secrets have no {:?} (the node-stage secret)",
            seal::CHAP_KEY
        ))
    })?;
    let bound = context::seal_binding(volume_id, &node.encoded_id, publish).ok_or_else(|| {
        Status::invalid_argument("publish_context has CHAP but no target_portal or target_iqn")
    })?;
    let secret: Zeroizing<String> = seal::open(key, &bound, sealed).map_err(|e| match e {
        seal::SealError::Refused => Status::permission_denied(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    })?;
    checked::chap_word(context::CHAP_SECRET_SEALED, &secret, false)?;
    Ok(Some(Chap {
        user: user.clone(),
        secret,
    }))
}

/// Attach `staged`'s transport; the block device, or none for NFS.
pub async fn attach(
    node: &NodeCtx,
    staged: &Staged,
    chap: Option<&Chap>,
) -> Result<Option<PathBuf>, Status> {
    match &staged.transport {
        Transport::Iscsi { portal, iqn, lun } => {
            let nodes = node.cfg.node.iscsi_nodes_dir();
            iscsi::login(&node.tools, &nodes, portal, iqn, *lun, chap)
                .await
                .map(Some)
        }
        Transport::Nvme {
            nqn,
            address,
            port,
            nguid,
        } => {
            let host_nqn = node.node_id.nqn.as_deref().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "this node has no NVMe host NQN ({} is absent)",
                    node.cfg.node.hostnqn_file().display()
                ))
            })?;
            nvme::connect(&node.tools, nqn, address, port, host_nqn, nguid, NVME_WAIT)
                .await
                .map(Some)
        }
        Transport::Nfs { .. } => Ok(None),
    }
}

/// Whether two transports share a session or connection (same iSCSI target at the same
/// portal, same NVMe subsystem), so detaching one would cut the other off.
fn shares_session(a: &Transport, b: &Transport) -> bool {
    match (a, b) {
        (
            Transport::Iscsi {
                portal: p1,
                iqn: i1,
                ..
            },
            Transport::Iscsi {
                portal: p2,
                iqn: i2,
                ..
            },
        ) => p1 == p2 && i1 == i2,
        (Transport::Nvme { nqn: n1, .. }, Transport::Nvme { nqn: n2, .. }) => n1 == n2,
        _ => false,
    }
}

/// Detach `staged`'s transport unless another staged volume (`others`) still uses the
/// same session or connection.
pub async fn detach(node: &NodeCtx, staged: &Staged, others: &[Staged]) -> Result<(), Status> {
    let in_use = others.iter().any(|o| {
        o.volume_id != staged.volume_id && shares_session(&o.transport, &staged.transport)
    });
    if in_use {
        log::info!(
            "volume {}: its {} session stays, another staged volume uses it",
            staged.volume_id,
            staged.transport.protocol()
        );
        return Ok(());
    }
    // Without the program there is no session it could have made (a stage that failed
    // for want of it): nothing to undo, and the unstage must not fail forever.
    let program = match staged.transport {
        Transport::Iscsi { .. } => "iscsiadm",
        Transport::Nvme { .. } => "nvme",
        Transport::Nfs { .. } => return Ok(()),
    };
    if !node.tools.has(program) {
        log::warn!(
            "volume {}: {program} is not installed; no session to end",
            staged.volume_id
        );
        return Ok(());
    }
    match &staged.transport {
        Transport::Iscsi { portal, iqn, .. } => iscsi::logout(&node.tools, portal, iqn).await,
        Transport::Nvme { nqn, .. } => nvme::disconnect(&node.tools, nqn).await,
        Transport::Nfs { .. } => Ok(()),
    }
}

/// `staged`'s block device now: for NVMe looked up again by NGUID among its subsystem's
/// namespaces (a reconnect renames `/dev/nvmeXnY`), otherwise the recorded one.
pub async fn current_device(staged: &Staged) -> Result<Option<PathBuf>, Status> {
    match &staged.transport {
        Transport::Nvme { nqn, nguid, .. } => nvme::find(nqn, nguid).await,
        _ => Ok(staged.device.clone()),
    }
}

/// Rescan `staged`'s transport so a grown volume shows its new size.
pub async fn rescan(node: &NodeCtx, staged: &Staged) -> Result<(), Status> {
    match &staged.transport {
        Transport::Iscsi { portal, iqn, .. } => iscsi::rescan(&node.tools, portal, iqn).await,
        Transport::Nvme { nqn, .. } => nvme::rescan(&node.tools, nqn).await,
        Transport::Nfs { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn transports_from_publish_context() {
        let iscsi = map(&[
            ("protocol", "iscsi"),
            ("target_portal", "192.0.2.1:3260"),
            ("target_iqn", "iqn.2026-01.io.shelf:v1"),
            ("target_lun", "1"),
        ]);
        assert_eq!(
            transport_of(&iscsi, &HashMap::new()).unwrap(),
            Transport::Iscsi {
                portal: "192.0.2.1:3260".into(),
                iqn: "iqn.2026-01.io.shelf:v1".into(),
                lun: 1
            }
        );
        let nfs = map(&[("nfs_export", "192.0.2.1:/shelf/v1")]);
        assert_eq!(
            transport_of(&nfs, &map(&[("protocol", "nfs")])).unwrap(),
            Transport::Nfs {
                export: "192.0.2.1:/shelf/v1".into()
            }
        );
        let bad = [
            map(&[]),
            map(&[("protocol", "fc")]),
            map(&[
                ("protocol", "iscsi"),
                ("target_portal", "p"),
                ("target_iqn", "i"),
                ("target_lun", "x"),
            ]),
            map(&[("protocol", "nvme"), ("target_nqn", "n")]),
            // Each value checked, not only present (a newline would be a record line).
            map(&[
                ("protocol", "iscsi"),
                ("target_portal", "192.0.2.1:3260"),
                (
                    "target_iqn",
                    "iqn.2026-01.io.shelf:v1\nnode.startup = automatic",
                ),
                ("target_lun", "1"),
            ]),
            map(&[
                ("protocol", "nvme"),
                ("target_nqn", "nqn.2014-08.io.shelf:v1"),
                ("nvme_address", "192.0.2.1"),
                ("nvme_port", "70000"),
                ("nvme_nguid", "6f1c2b9a0d4e4c1e9a533d1a2b3c4d5e"),
            ]),
            map(&[("protocol", "nfs"), ("nfs_export", "-oremount:/x")]),
        ];
        for m in bad {
            let e = transport_of(&m, &HashMap::new()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{m:?}");
        }
    }

    #[test]
    fn sessions_are_shared_by_target_not_by_lun() {
        let a = Transport::Iscsi {
            portal: "p:1".into(),
            iqn: "iqn.x:t".into(),
            lun: 1,
        };
        let b = Transport::Iscsi {
            portal: "p:1".into(),
            iqn: "iqn.x:t".into(),
            lun: 2,
        };
        let c = Transport::Iscsi {
            portal: "p:1".into(),
            iqn: "iqn.x:u".into(),
            lun: 1,
        };
        assert!(shares_session(&a, &b));
        assert!(!shares_session(&a, &c));
        let n = Transport::Nfs {
            export: "h:/e".into(),
        };
        assert!(!shares_session(&n, &n));
    }
}
