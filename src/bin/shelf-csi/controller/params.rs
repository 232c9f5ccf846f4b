//! What a CreateVolume (or GetCapacity, ValidateVolumeCapabilities) asks for, checked
//! without touching an appliance: the StorageClass parameters, the volume capabilities
//! against the protocol, and the size a capacity range allows. Pure; tested below.
//!
//! Protocols: `iscsi` and `nvme` volumes are block shares (the node formats a mount
//! volume); `nfs` volumes are `layout: filesystem` shares, formatted and mounted by shelfd
//! and exported over NFS, so they are mount-only. Multi-node access modes make the share
//! `multiattach`; a filesystem the node formats (iSCSI/NVMe mount) is never written from
//! two nodes, so there only MULTI_NODE_READER_ONLY is multi-node.

use std::collections::HashMap;

use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::volume_capability::AccessType;
use bpfman_csi::v1::{CapacityRange, VolumeCapability};
use shelf::model::{FsKind, MAX_SIZE, SECTOR};
use tonic::Status;

/// Parameter prefix the Kubernetes sidecars reserve (`--extra-create-metadata` adds the
/// PVC's and PV's names under it).
pub const K8S_PREFIX: &str = "csi.storage.k8s.io/";

/// The size of a volume whose request names none: 1 GiB.
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// The filesystems a node formats for an iSCSI/NVMe mount volume.
const NODE_FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];

/// An export protocol of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// iSCSI (tgt or LIO): a block share.
    Iscsi,
    /// NFS: a formatted (`layout: filesystem`) share.
    Nfs,
    /// NVMe/TCP: a block share.
    Nvme,
}

impl Protocol {
    /// The name in parameters, metadata and volume_context.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Iscsi => "iscsi",
            Protocol::Nfs => "nfs",
            Protocol::Nvme => "nvme",
        }
    }

    /// The protocol called `s`.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "iscsi" => Some(Protocol::Iscsi),
            "nfs" => Some(Protocol::Nfs),
            "nvme" => Some(Protocol::Nvme),
            _ => None,
        }
    }
}

/// The checked StorageClass parameters of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params {
    /// `pool`: the shelf pool (default: the appliance's configured pool, else shelfd's).
    pub pool: Option<String>,
    /// `protocol` (default iSCSI).
    pub protocol: Option<Protocol>,
    /// `fsType` or `csi.storage.k8s.io/fstype`: the node's filesystem for an iSCSI/NVMe
    /// mount volume, shelfd's for an NFS one.
    pub fs_type: Option<String>,
    /// `sparse`: thin (default) or preallocated.
    pub sparse: Option<bool>,
    /// The PVC's name, namespace and the PV's name, recorded as share metadata.
    pub k8s: Vec<(&'static str, String)>,
}

/// Metadata keys for the sidecars' parameters, by parameter.
const K8S_METADATA: [(&str, &str); 3] = [
    ("csi.storage.k8s.io/pvc/name", "csi.pvc.name"),
    ("csi.storage.k8s.io/pvc/namespace", "csi.pvc.namespace"),
    ("csi.storage.k8s.io/pv/name", "csi.pv.name"),
];

impl Params {
    /// Check `parameters`: an unknown key is INVALID_ARGUMENT (a typo must not silently
    /// give another volume), except the sidecars' `csi.storage.k8s.io/` ones.
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Params, Status> {
        let mut p = Params::default();
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (k, v) in keys {
            let bad = |why: &str| Status::invalid_argument(format!("parameter {k}={v:?}: {why}"));
            match k.as_str() {
                "pool" => {
                    shelf::model::validate_name("pool", v).map_err(|e| bad(&e.to_string()))?;
                    p.pool = Some(v.clone());
                }
                "protocol" => {
                    p.protocol = Some(Protocol::parse(v).ok_or_else(|| bad("iscsi, nfs or nvme"))?);
                }
                "fsType" | "csi.storage.k8s.io/fstype" if !v.is_empty() => {
                    if p.fs_type.as_ref().is_some_and(|f| f != v) {
                        return Err(bad("fsType and csi.storage.k8s.io/fstype differ"));
                    }
                    p.fs_type = Some(v.clone());
                }
                "fsType" | "csi.storage.k8s.io/fstype" => {}
                "layout" if v == "block" || v == "filesystem" => {}
                "layout" => return Err(bad("block or filesystem")),
                "sparse" => {
                    p.sparse = Some(v.parse().map_err(|_| bad("true or false"))?);
                }
                _ if k.starts_with(K8S_PREFIX) => {
                    if let Some((_, meta)) = K8S_METADATA.iter().find(|(param, _)| param == k) {
                        p.k8s.push((meta, v.clone()));
                    }
                }
                _ => {
                    return Err(bad(
                        "unknown parameter (pool, protocol, fsType, layout, sparse)",
                    ))
                }
            }
        }
        // `layout` only confirms what the protocol implies.
        if let Some(layout) = parameters.get("layout") {
            let want = if p.protocol() == Protocol::Nfs {
                "filesystem"
            } else {
                "block"
            };
            if layout != want {
                return Err(Status::invalid_argument(format!(
                    "parameter layout={layout:?}: {} volumes are {want} shares",
                    p.protocol().as_str()
                )));
            }
        }
        Ok(p)
    }

    /// The protocol, iSCSI by default.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Iscsi)
    }
}

/// What the capabilities of a request need of the share.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    /// Some capability is multi-node: the share must be `multiattach`.
    pub multiattach: bool,
    /// The filesystem of the mount capabilities (node's for iSCSI/NVMe, shelfd's for NFS).
    pub fs_type: Option<String>,
}

/// Check `caps` against `protocol` (see the module comment); `fs_param` is the fsType
/// parameter, which a capability's `fs_type` must agree with.
pub fn check_capabilities(
    caps: &[VolumeCapability],
    protocol: Protocol,
    fs_param: Option<&str>,
) -> Result<Needs, String> {
    if caps.is_empty() {
        return Err("volume_capabilities are required".into());
    }
    let mut needs = Needs {
        fs_type: fs_param.map(str::to_string),
        ..Needs::default()
    };
    for cap in caps {
        let mode = cap
            .access_mode
            .as_ref()
            .and_then(|m| Mode::try_from(m.mode).ok())
            .filter(|m| *m != Mode::Unknown)
            .ok_or("every capability needs a known access_mode")?;
        let multi = matches!(
            mode,
            Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
        );
        needs.multiattach |= multi;
        match (&cap.access_type, protocol) {
            (None, _) => return Err("every capability needs an access_type".into()),
            (Some(AccessType::Block(_)), Protocol::Nfs) => {
                return Err("NFS volumes are mount only (no raw block access)".into())
            }
            (Some(AccessType::Block(_)), _) => {}
            (Some(AccessType::Mount(m)), _) => {
                if multi && mode != Mode::MultiNodeReaderOnly && protocol != Protocol::Nfs {
                    return Err(format!(
                        "{} on an {} mount volume: a filesystem the node formats cannot be \
                         written from several nodes (use block access or NFS)",
                        mode.as_str_name(),
                        protocol.as_str()
                    ));
                }
                let fs = m.fs_type.as_str();
                let fs = if protocol == Protocol::Nfs && matches!(fs, "nfs" | "nfs4") {
                    ""
                } else {
                    fs
                };
                if fs.is_empty() {
                    continue;
                }
                if needs.fs_type.as_deref().is_some_and(|f| f != fs) {
                    return Err(format!(
                        "fs_type {fs:?} differs from {:?} asked elsewhere",
                        needs.fs_type.as_deref().unwrap_or_default()
                    ));
                }
                needs.fs_type = Some(fs.to_string());
            }
        }
    }
    if let Some(fs) = &needs.fs_type {
        let ok = match protocol {
            Protocol::Nfs => shelf_fs(fs).is_some(),
            _ => NODE_FILESYSTEMS.contains(&fs.as_str()),
        };
        if !ok {
            return Err(format!(
                "fs_type {fs:?} is not supported for {} (ext4 or xfs)",
                protocol.as_str()
            ));
        }
    }
    Ok(needs)
}

/// shelfd's filesystem kind called `fs`.
pub fn shelf_fs(fs: &str) -> Option<FsKind> {
    match fs {
        "xfs" => Some(FsKind::Xfs),
        "ext4" => Some(FsKind::Ext4),
        _ => None,
    }
}

/// Whether any capability is a mount (and not raw block).
pub fn wants_mount(caps: &[VolumeCapability]) -> bool {
    caps.iter()
        .any(|c| matches!(c.access_type, Some(AccessType::Mount(_))))
}

/// The size to make for `range`: `required_bytes` (or `default`, capped by
/// `limit_bytes`), at least `min`, rounded up to 512 bytes; OUT_OF_RANGE when no such size
/// is within the limit or shelf's 1 PiB.
pub fn size_for(range: Option<&CapacityRange>, default: u64, min: u64) -> Result<u64, Status> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Status::invalid_argument(
            "capacity_range bytes must not be negative",
        ));
    }
    let (required, limit) = (required as u64, limit as u64);
    let limit = if limit == 0 { MAX_SIZE } else { limit };
    let want = if required > 0 {
        required
    } else {
        default.min(limit)
    };
    let size = want.max(min).div_ceil(SECTOR) * SECTOR;
    if size > limit || size > MAX_SIZE {
        return Err(Status::out_of_range(format!(
            "no volume size fits required_bytes {required} and limit_bytes {limit}: \
             shelf sizes are multiples of 512 bytes, at least {min} and at most {MAX_SIZE}"
        )));
    }
    Ok(size)
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
