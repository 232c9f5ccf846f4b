//! What ControllerPublishVolume hands to NodeStageVolume in `publish_context` (a string
//! map Kubernetes stores in the VolumeAttachment's status): the keys, in one place, so the
//! two services cannot drift apart. The controller fills it from `share.attach`'s
//! `connection_info` (docs/exports.md); the node reads it to log in or mount.
//!
//! No secret is stored here in the clear: an iSCSI CHAP secret travels sealed
//! ([`CHAP_SECRET_SEALED`]) under a key that only the controller's publish secret and the
//! node's stage secret hold (docs/csi.md, "CHAP").

/// `iscsi`, `nfs` or `nvme`.
pub const PROTOCOL: &str = "protocol";
/// iSCSI: the portal `address:port`.
pub const TARGET_PORTAL: &str = "target_portal";
/// iSCSI: the target IQN.
pub const TARGET_IQN: &str = "target_iqn";
/// iSCSI: the LUN number.
pub const TARGET_LUN: &str = "target_lun";
/// iSCSI: the CHAP user name, when the export has CHAP.
pub const CHAP_USER: &str = "chap_user";
/// iSCSI: the CHAP secret, sealed for the node (see the module comment).
pub const CHAP_SECRET_SEALED: &str = "chap_secret_sealed";
/// NFS: what to mount, `host:path`.
pub const NFS_EXPORT: &str = "nfs_export";
/// NVMe/TCP: the subsystem NQN.
pub const TARGET_NQN: &str = "target_nqn";
/// NVMe/TCP: the portal address.
pub const NVME_ADDRESS: &str = "nvme_address";
/// NVMe/TCP: the portal port.
pub const NVME_PORT: &str = "nvme_port";
/// NVMe/TCP: the namespace's NGUID (how the node finds the block device).
pub const NVME_NGUID: &str = "nvme_nguid";
/// `rw` or `ro`, as attached.
pub const ACCESS_MODE: &str = "access_mode";
/// `true` when the target really unmaps for this volume (`connection_info.data.discard`):
/// a filesystem on it may be mounted with `discard` or trimmed; else `false`.
pub const DISCARD: &str = "discard";

/// What the sealed CHAP secret of `ctx` is bound to (seal.rs): the volume and node ids
/// and the context's own [`TARGET_PORTAL`], [`TARGET_IQN`] and [`CHAP_USER`]. The
/// controller seals and the node opens with this one function, so the two read the same
/// fields. `None` when one of those keys is absent.
pub fn seal_binding<'a>(
    volume_id: &'a str,
    node_id: &'a str,
    ctx: &'a std::collections::HashMap<String, String>,
) -> Option<crate::seal::Bound<'a>> {
    Some(crate::seal::Bound {
        volume_id,
        node_id,
        target_portal: ctx.get(TARGET_PORTAL)?,
        target_iqn: ctx.get(TARGET_IQN)?,
        chap_user: ctx.get(CHAP_USER)?,
    })
}
