//! NodeGetInfo and NodeGetCapabilities: who this node is (the node id of nodeid.rs, built
//! once at start from the config and the initiator files) and what it can do.

use std::collections::HashMap;
use std::path::Path;

use bpfman_csi::v1::node_service_capability::rpc::Type as Rpc;
use bpfman_csi::v1::node_service_capability::{self, Rpc as RpcCap};
use bpfman_csi::v1::{
    NodeGetCapabilitiesResponse, NodeGetInfoResponse, NodeServiceCapability, Topology,
};

use crate::config::{NodeConfig, TOPOLOGY_KEY};
use crate::nodeid::NodeId;

/// The RPC capabilities advertised: staging (iSCSI/NVMe log in once per node), expansion
/// (rescan and grow the filesystem), stats, and the volume's condition (abnormal when its
/// device is gone), and SINGLE_NODE_MULTI_WRITER, which the controller advertises too
/// (controller/mod.rs; CSI wants both services to agree): the node serves the
/// SINGLE_NODE_SINGLE_WRITER and SINGLE_NODE_MULTI_WRITER modes as SINGLE_NODE_WRITER,
/// one stage per volume and node, any number of publishes of it.
pub const CAPABILITIES: &[Rpc] = &[
    Rpc::StageUnstageVolume,
    Rpc::ExpandVolume,
    Rpc::GetVolumeStats,
    Rpc::VolumeCondition,
    Rpc::SingleNodeMultiWriter,
];

/// The value of `key=value` in a file of such lines (open-iscsi's initiatorname.iscsi:
/// `InitiatorName=iqn...`; `#` starts a comment). Trust: a root-owned system file; the
/// value is checked by [`NodeId::encode`] before it is used.
pub fn read_key(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The first non-empty, non-comment line of a file (nvme-cli's hostnqn).
pub fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// This node's id: host = `node.name` or the host name; the IQN from the initiator file,
/// the NQN from the host NQN file (each absent when its file is); the IP from the config.
/// Checked now, so a bad file stops the plugin at start rather than failing every publish.
pub fn node_id(cfg: &NodeConfig) -> Result<NodeId, String> {
    let host = match &cfg.name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .map_err(|e| format!("the host name: {e}"))?
            .to_string_lossy()
            .into_owned(),
    };
    let initiator_file = cfg.initiator_file();
    let initiator = match read_optional(&initiator_file)? {
        Some(t) => Some(
            read_key(&t, "InitiatorName")
                .ok_or_else(|| format!("{}: no InitiatorName= line", initiator_file.display()))?,
        ),
        None => None,
    };
    let nqn_file = cfg.hostnqn_file();
    let nqn = match read_optional(&nqn_file)? {
        Some(t) => Some(first_line(&t).ok_or_else(|| format!("{}: empty", nqn_file.display()))?),
        None => None,
    };
    let id = NodeId {
        host,
        initiator,
        nqn,
        ip: cfg.ip.clone(),
    };
    id.encode()?;
    Ok(id)
}

/// The NodeGetInfo answer: the id, and the topology segment only when one is configured.
/// No max_volumes_per_node: nothing on this side limits it (0 = the CO decides).
pub fn info(cfg: &NodeConfig, encoded_id: &str) -> NodeGetInfoResponse {
    NodeGetInfoResponse {
        node_id: encoded_id.to_string(),
        max_volumes_per_node: 0,
        accessible_topology: cfg.segment.as_ref().map(|s| Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.to_string(), s.clone())]),
        }),
    }
}

/// The NodeGetCapabilities answer.
pub fn capabilities() -> NodeGetCapabilitiesResponse {
    NodeGetCapabilitiesResponse {
        capabilities: CAPABILITIES
            .iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(RpcCap {
                    r#type: *t as i32,
                })),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_initiator_name_and_host_nqn_files() {
        let text = "## DO NOT EDIT\n# InitiatorName=iqn.bad\nInitiatorName=iqn.1993-08.org.debian:01:abc\n";
        assert_eq!(
            read_key(text, "InitiatorName").as_deref(),
            Some("iqn.1993-08.org.debian:01:abc")
        );
        assert_eq!(read_key("InitiatorName=\n", "InitiatorName"), None);
        assert_eq!(
            first_line("\nnqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427\n")
                .as_deref(),
            Some("nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
    }

    #[test]
    fn node_id_from_files_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("initiatorname.iscsi");
        std::fs::write(&ini, "InitiatorName=iqn.2026-01.io.shelf:w1\n").unwrap();
        let cfg = NodeConfig {
            name: Some("w1".into()),
            initiator_file: Some(ini.clone()),
            hostnqn_file: Some(dir.path().join("absent")),
            ip: Some("192.0.2.7".into()),
            ..NodeConfig::default()
        };
        let id = node_id(&cfg).unwrap();
        assert_eq!(id.initiator.as_deref(), Some("iqn.2026-01.io.shelf:w1"));
        assert_eq!(id.nqn, None);
        assert_eq!(id.ip.as_deref(), Some("192.0.2.7"));
        std::fs::write(&ini, "nothing here\n").unwrap();
        assert!(node_id(&cfg).unwrap_err().contains("InitiatorName"));
        std::fs::write(&ini, "InitiatorName=not-an-iqn\n").unwrap();
        assert!(node_id(&cfg).is_err());
    }
}
