//! The plugin's config file (TOML): the driver name, the shelf appliances the controller
//! talks to (each one topology segment), and the node service's settings. Everything is
//! checked at load; an unknown key is an error, so a typo cannot silently change meaning.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The topology key whose value names the appliance (one segment per shelfd node).
pub const TOPOLOGY_KEY: &str = "topology.shelf.io/node";

/// The default CSI driver name.
pub const DEFAULT_DRIVER_NAME: &str = "csi.shelf.io";

/// Which services the process serves besides Identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Controller only (the Deployment beside the sidecars).
    Controller,
    /// Node only (the DaemonSet on every worker).
    Node,
    /// Both (one process on a single machine, and the tests).
    All,
}

impl Mode {
    /// Whether the Controller service is served.
    pub fn serves_controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }
    /// Whether the Node service is served.
    pub fn serves_node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
}

/// One shelf appliance (a shelfd node), as the controller reaches it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// Its name: the value of [`TOPOLOGY_KEY`] and the first part of every volume id.
    pub name: String,
    /// shelfd's socket (local, or the local end of an `ssh -L` forward: docs/cinder.md).
    pub socket: PathBuf,
    /// The pool for volumes whose StorageClass names none (default: shelfd's default pool).
    #[serde(default)]
    pub pool: Option<String>,
}

/// The node service's settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This machine's name in node ids (default: the host name).
    #[serde(default)]
    pub name: Option<String>,
    /// The appliance this machine is attached to for topology, if it reaches only one
    /// (a node plugin on the appliance itself); absent: the node reports no topology.
    #[serde(default)]
    pub segment: Option<String>,
    /// The address appliances see this machine's NFS mounts come from (NFS exports are
    /// opened to it); default: none (the host name is used).
    #[serde(default)]
    pub ip: Option<String>,
    /// Where the node keeps what it staged (default /var/lib/shelf-csi).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// open-iscsi's initiator name file, read for the node id's IQN (default
    /// /etc/iscsi/initiatorname.iscsi; absent file: the node has no IQN).
    #[serde(default)]
    pub initiator_file: Option<PathBuf>,
    /// nvme-cli's host NQN file, read for the node id's NQN (default /etc/nvme/hostnqn;
    /// absent file: the node has no NQN).
    #[serde(default)]
    pub hostnqn_file: Option<PathBuf>,
    /// open-iscsi's node record directory, where the node writes a target's CHAP
    /// credentials (default /etc/iscsi/nodes; /var/lib/iscsi/nodes on Red Hat systems).
    #[serde(default)]
    pub iscsi_nodes_dir: Option<PathBuf>,
    /// kubelet's root directory (default /var/lib/kubelet, kubelet's `--root-dir`
    /// default): every staging and target path the CO sends must lie beneath it, with no
    /// symbolic link in any component below it.
    #[serde(default)]
    pub kubelet_dir: Option<PathBuf>,
}

impl NodeConfig {
    /// [`NodeConfig::state_dir`] or its default.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/shelf-csi"))
    }
    /// [`NodeConfig::initiator_file`] or its default.
    pub fn initiator_file(&self) -> PathBuf {
        self.initiator_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/iscsi/initiatorname.iscsi"))
    }
    /// [`NodeConfig::hostnqn_file`] or its default.
    pub fn hostnqn_file(&self) -> PathBuf {
        self.hostnqn_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/nvme/hostnqn"))
    }
    /// [`NodeConfig::kubelet_dir`] or its default.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.kubelet_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/kubelet"))
    }

    /// [`NodeConfig::iscsi_nodes_dir`] or its default.
    pub fn iscsi_nodes_dir(&self) -> PathBuf {
        self.iscsi_nodes_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/iscsi/nodes"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    driver_name: Option<String>,
    #[serde(default, rename = "appliance")]
    appliances: Vec<ApplianceConfig>,
    #[serde(default)]
    node: NodeConfig,
}

/// The loaded, checked config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The CSI driver name (GetPluginInfo).
    pub driver_name: String,
    /// Which services are served.
    pub mode: Mode,
    /// The appliances, in the file's order.
    pub appliances: Vec<ApplianceConfig>,
    /// The node service's settings.
    pub node: NodeConfig,
}

impl Config {
    /// Read and check `path` for `mode`.
    pub fn load(path: &Path, mode: Mode) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Config::parse(&text, mode)
    }

    /// Parse and check a config text.
    pub fn parse(text: &str, mode: Mode) -> Result<Config, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let driver_name = file
            .driver_name
            .unwrap_or_else(|| DEFAULT_DRIVER_NAME.to_string());
        check_driver_name(&driver_name)?;
        let mut seen = BTreeSet::new();
        for a in &file.appliances {
            check_segment(&a.name).map_err(|e| format!("appliance {:?}: {e}", a.name))?;
            if !seen.insert(a.name.clone()) {
                return Err(format!("appliance {:?} is listed twice", a.name));
            }
            if !a.socket.is_absolute() {
                return Err(format!(
                    "appliance {:?}: socket must be an absolute path",
                    a.name
                ));
            }
        }
        if mode.serves_controller() && file.appliances.is_empty() {
            return Err("the controller needs at least one [[appliance]]".into());
        }
        if let Some(s) = &file.node.segment {
            check_segment(s).map_err(|e| format!("node.segment: {e}"))?;
        }
        let n = &file.node;
        for (key, path) in [
            ("node.state_dir", &n.state_dir),
            ("node.initiator_file", &n.initiator_file),
            ("node.hostnqn_file", &n.hostnqn_file),
            ("node.iscsi_nodes_dir", &n.iscsi_nodes_dir),
            ("node.kubelet_dir", &n.kubelet_dir),
        ] {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(format!("{key} must be an absolute path"));
            }
        }
        Ok(Config {
            driver_name,
            mode,
            appliances: file.appliances,
            node: file.node,
        })
    }

    /// The appliance called `name`.
    pub fn appliance(&self, name: &str) -> Option<&ApplianceConfig> {
        self.appliances.iter().find(|a| a.name == name)
    }
}

/// A CSI driver name: at most 63 characters, a DNS-like name (CSI spec, GetPluginInfo).
fn check_driver_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("driver_name {name:?}: at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric"))
    }
}

/// A topology segment value, which is also a Kubernetes label value and the first part of
/// every id: 1..=63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends (so never
/// containing the id separator `:`).
pub fn check_segment(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err("a name of 1 to 63 characters of [A-Za-z0-9._-], alphanumeric at both ends".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[appliance]]
name = "a1"
socket = "/run/shelf/a1.sock"
pool = "fast"

[[appliance]]
name = "a2"
socket = "/run/shelf/a2.sock"
"#;

    #[test]
    fn two_appliances_load_in_order() {
        let c = Config::parse(TWO, Mode::Controller).unwrap();
        assert_eq!(c.driver_name, DEFAULT_DRIVER_NAME);
        let names: Vec<_> = c.appliances.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a1", "a2"]);
        assert_eq!(c.appliance("a1").unwrap().pool.as_deref(), Some("fast"));
        assert!(c.appliance("a3").is_none());
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let cases = [
            ("", Mode::Controller, "at least one"),
            (
                "[[appliance]]\nname=\"a:b\"\nsocket=\"/s\"",
                Mode::Controller,
                "appliance",
            ),
            (
                "[[appliance]]\nname=\"a\"\nsocket=\"rel\"",
                Mode::Controller,
                "absolute",
            ),
            (
                "[[appliance]]\nname=\"a\"\nsocket=\"/s\"\n[[appliance]]\nname=\"a\"\nsocket=\"/t\"",
                Mode::All,
                "twice",
            ),
            ("driver_name = \"-x\"", Mode::Node, "driver_name"),
            ("colour = 1", Mode::Node, "unknown field"),
            ("[node]\nsegment = \"\"", Mode::Node, "node.segment"),
            ("[node]\nstate_dir = \"rel\"", Mode::Node, "node.state_dir"),
            ("[node]\nhostnqn_file = \"x\"", Mode::Node, "node.hostnqn_file"),
        ];
        for (text, mode, want) in cases {
            let err = Config::parse(text, mode).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_node_needs_no_appliance() {
        let c = Config::parse("[node]\nname = \"w1\"", Mode::Node).unwrap();
        assert_eq!(c.node.name.as_deref(), Some("w1"));
        assert_eq!(c.node.state_dir(), Path::new("/var/lib/shelf-csi"));
        assert_eq!(c.node.iscsi_nodes_dir(), Path::new("/etc/iscsi/nodes"));
        assert_eq!(c.node.kubelet_dir(), Path::new("/var/lib/kubelet"));
        let c = Config::parse(
            "[node]\ninitiator_file = \"/t/i\"\nhostnqn_file = \"/t/n\"",
            Mode::Node,
        )
        .unwrap();
        assert_eq!(c.node.initiator_file(), Path::new("/t/i"));
        assert_eq!(c.node.hostnqn_file(), Path::new("/t/n"));
    }
}
