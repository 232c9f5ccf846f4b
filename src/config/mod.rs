//! shelfd's configuration: a strict TOML file, with an embedded default.
//!
//! The embedded default is `image/shelf.toml`, the same file the appliance installs as
//! `/etc/shelf/shelf.toml`, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{validate_iqn, validate_name, validate_nqn, PoolKind, Protocol};

mod metrics;
mod pools;
mod sections;

pub use metrics::{MetricsConfig, MetricsListen};
use pools::validate_file_pool_path;
pub use pools::{PoolConfig, DEFAULT_DATA_THRESHOLD, DEFAULT_METADATA_THRESHOLD};
pub use sections::{
    AccessConfig, FilesystemConfig, ImagesConfig, IscsiConfig, LimitsConfig, NfsConfig, NvmeConfig,
    TgtTransport, DEFAULT_MAX_UPLOADS,
};

/// The default config, compiled in.
pub const EMBEDDED: &str = include_str!("../../image/shelf.toml");

/// Where shelfd looks for its config when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/shelf/shelf.toml";

/// An error in the config: which file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config {origin}: {message}")]
pub struct ConfigError {
    /// The file, or "embedded default".
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the database, the lock file, the node id (`node-id`) and default
    /// pools.
    pub state_dir: PathBuf,
    /// This node's display name in `hello` and in send streams (default: the host name).
    /// The node's id is not a setting: it is made at the first start and kept in
    /// `<state_dir>/node-id`.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Path of the management socket.
    pub socket: PathBuf,
    /// Largest request frame, in bytes (64 B to 64 MiB).
    #[serde(default = "default_max_frame")]
    pub max_frame_size: u32,
    /// Requests one connection may have in flight (1 to 4096).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Seconds an external command may run (1 to 3600).
    #[serde(default = "default_timeout")]
    pub command_timeout: u64,
    /// Seconds between automatic reconciliations of exports with the target daemons
    /// (0: only at start-up and on request).
    #[serde(default = "default_reconcile")]
    pub reconcile_interval: u64,
    /// Pools by name.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    /// iSCSI export settings.
    #[serde(default)]
    pub iscsi: IscsiConfig,
    /// NFS export settings.
    #[serde(default)]
    pub nfs: NfsConfig,
    /// NVMe over TCP export settings.
    #[serde(default)]
    pub nvme: NvmeConfig,
    /// Who may use the socket, and for what.
    #[serde(default)]
    pub access: AccessConfig,
    /// Formatted (`filesystem`) shares.
    #[serde(default)]
    pub filesystem: FilesystemConfig,
    /// The image cache: where imports may read from, how many uploads may run.
    #[serde(default)]
    pub images: ImagesConfig,
    /// What connections may cost: memory, descriptors, time.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Prometheus metrics: an HTTP listener and/or a textfile (both off by default).
    #[serde(default)]
    pub metrics: MetricsConfig,
}

fn default_max_frame() -> u32 {
    1 << 20
}
fn default_in_flight() -> usize {
    64
}
fn default_timeout() -> u64 {
    30
}
fn default_reconcile() -> u64 {
    60
}

/// A `node_id` key is refused with its own message (rather than serde's "unknown field"):
/// the id is not configurable, and whoever tries to set it should learn where it lives.
fn refuse_node_id(text: &str) -> Result<(), String> {
    match text.parse::<toml::Table>() {
        Ok(t) if t.contains_key("node_id") => Err("node_id cannot be set in the config: \
            the node id is made at the first start and kept in <state_dir>/node-id \
            (node_name sets the node's display name)"
            .into()),
        _ => Ok(()),
    }
}

impl Config {
    /// Parse and validate config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            origin: origin.to_string(),
            message,
        };
        refuse_node_id(text).map_err(err)?;
        let mut cfg: Config = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED, "embedded default").expect("the embedded config is valid")
    }

    /// Load `path` if given; otherwise the default path if it exists; otherwise the embedded
    /// default. A path given explicitly must exist.
    pub fn load(path: Option<&Path>) -> Result<(Config, String), ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let origin = path.display().to_string();
                Ok((Config::parse(&text, &origin)?, origin))
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Config::embedded(), "embedded default".to_string()))
            }
            Err(e) => Err(ConfigError {
                origin: path.display().to_string(),
                message: format!("cannot read: {e}"),
            }),
        }
    }

    /// Apply command-line overrides and validate the result again.
    pub fn with_overrides(
        mut self,
        state_dir: Option<PathBuf>,
        socket: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        if let Some(s) = state_dir {
            self.state_dir = s;
        }
        if let Some(s) = socket {
            self.socket = s;
        }
        self.validate().map_err(|message| ConfigError {
            origin: "command line".into(),
            message,
        })?;
        Ok(self)
    }

    /// The directory formatted shares are mounted under.
    pub fn mount_base(&self) -> PathBuf {
        if self.filesystem.mount_base.as_os_str().is_empty() {
            self.state_dir.join("mounts")
        } else {
            self.filesystem.mount_base.clone()
        }
    }

    fn validate(&mut self) -> Result<(), String> {
        if !self.state_dir.is_absolute() {
            return Err(format!(
                "state_dir {:?} must be an absolute path",
                self.state_dir
            ));
        }
        if !self.socket.is_absolute() {
            return Err(format!("socket {:?} must be an absolute path", self.socket));
        }
        if let Some(n) = &self.node_name {
            validate_name("node", n).map_err(|e| format!("node_name: {e}"))?;
        }
        if !(64..=64 << 20).contains(&self.max_frame_size) {
            return Err(format!(
                "max_frame_size {} must be between 64 and 67108864",
                self.max_frame_size
            ));
        }
        if !(1..=4096).contains(&self.max_in_flight) {
            return Err(format!(
                "max_in_flight {} must be between 1 and 4096",
                self.max_in_flight
            ));
        }
        self.limits.validate()?;
        self.metrics.validate()?;
        if !(1..=3600).contains(&self.command_timeout) {
            return Err(format!(
                "command_timeout {} must be between 1 and 3600 seconds",
                self.command_timeout
            ));
        }
        if self.iscsi.driver.protocol() != Protocol::Iscsi {
            return Err(format!(
                "iscsi.driver {:?} is not an iSCSI driver",
                self.iscsi.driver.as_str()
            ));
        }
        if self.nfs.driver.protocol() != Protocol::Nfs {
            return Err(format!(
                "nfs.driver {:?} is not an NFS driver",
                self.nfs.driver.as_str()
            ));
        }
        if self.nvme.driver.protocol() != Protocol::Nvme {
            return Err(format!(
                "nvme.driver {:?} is not an NVMe driver",
                self.nvme.driver.as_str()
            ));
        }
        validate_nqn(&format!("{}:x", self.nvme.nqn_prefix))
            .map_err(|e| format!("nvme.nqn_prefix: {e}"))?;
        if self.nvme.nqn_prefix.len() > 150 {
            return Err("nvme.nqn_prefix must be at most 150 bytes".into());
        }
        if self.nvme.portal.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "nvme.portal {:?} must be ADDRESS:PORT",
                self.nvme.portal
            ));
        }
        if !self.nvme.configfs.is_absolute() {
            return Err(format!(
                "nvme.configfs {:?} must be an absolute path",
                self.nvme.configfs
            ));
        }
        validate_iqn(&format!("{}:x", self.iscsi.iqn_prefix))
            .map_err(|e| format!("iscsi.iqn_prefix: {e}"))?;
        if self.iscsi.portal.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "iscsi.portal {:?} must be ADDRESS:PORT",
                self.iscsi.portal
            ));
        }
        for (key, path) in [
            ("nfs.exports_file", &self.nfs.exports_file),
            ("nfs.ganesha_exports", &self.nfs.ganesha_exports),
            ("nfs.ganesha_pidfile", &self.nfs.ganesha_pidfile),
        ] {
            if !path.is_absolute() {
                return Err(format!("{key} {path:?} must be an absolute path"));
            }
        }
        if self
            .nfs
            .host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "nfs.host {:?} must not contain spaces",
                self.nfs.host
            ));
        }
        if self.reconcile_interval > 86_400 {
            return Err("reconcile_interval must be at most 86400 seconds".into());
        }
        let mb = &self.filesystem.mount_base;
        if !mb.as_os_str().is_empty() && !mb.is_absolute() {
            return Err(format!(
                "filesystem.mount_base {mb:?} must be an absolute path"
            ));
        }
        let a = &self.access;
        for (key, list) in [
            ("socket_group", std::slice::from_ref(&a.socket_group)),
            ("admin_users", &a.admin_users[..]),
            ("admin_groups", &a.admin_groups[..]),
            ("reader_users", &a.reader_users[..]),
            ("reader_groups", &a.reader_groups[..]),
        ] {
            for name in list {
                let ok = name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    && !name.starts_with('-');
                if !ok {
                    return Err(format!(
                        "access.{key}: {name:?} is not a user or group name or number"
                    ));
                }
            }
        }
        self.images.validate()?;
        for (name, p) in &self.pools {
            validate_name("pool", name).map_err(|e| format!("pools.{name}: {e}"))?;
            if let Some(path) = &p.path {
                if !path.is_absolute() {
                    return Err(format!(
                        "pools.{name}.path {path:?} must be an absolute path"
                    ));
                }
            }
            p.capacity_policy()
                .validate()
                .map_err(|e| format!("pools.{name}: {e}"))?;
            p.validate_kind(name)?;
        }
        for (name, (kind, path)) in self.resolved_pools() {
            if kind == PoolKind::File {
                validate_file_pool_path(&name, &path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/shelf"));
        assert_eq!(c.max_frame_size, 1 << 20);
        let pools = c.resolved_pools();
        assert_eq!(
            pools["default"].1,
            PathBuf::from("/var/lib/shelf/pools/default")
        );
    }

    #[test]
    fn overrides_move_the_default_pool() {
        let c = Config::embedded()
            .with_overrides(Some("/tmp/s".into()), None)
            .unwrap();
        assert!(Config::embedded()
            .with_overrides(Some("relative".into()), None)
            .is_err());
        assert_eq!(
            c.resolved_pools()["default"].1,
            PathBuf::from("/tmp/s/pools/default")
        );
    }

    #[test]
    fn file_pools_under_dev_are_refused() {
        let base = "state_dir='/var/lib/s'\nsocket='/run/s.sock'\n";
        for path in ["/dev/shm/pool", "/dev", "/srv/../dev/shm/p", "/dev/./shm"] {
            let e = Config::parse(&format!("{base}[pools.p]\npath = '{path}'\n"), "t").unwrap_err();
            assert!(e.message.contains("under /dev"), "{path}: {e}");
        }
        // The default pool follows state_dir there too.
        let e =
            Config::parse("state_dir='/dev/shm/shelf'\nsocket='/run/s.sock'\n", "t").unwrap_err();
        assert!(e.message.contains("pools.default"), "{e}");
        // A path that resolves under /dev through a symbolic link.
        let dir = std::env::temp_dir().join(format!("shelf-cfg-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/dev/shm", dir.join("link")).unwrap();
        let path = dir.join("link");
        let r = Config::parse(
            &format!("{base}[pools.p]\npath = '{}'\n", path.display()),
            "t",
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(r.unwrap_err().message.contains("under /dev"));
        // Not a prefix match: /devices is not /dev; LVM pools live there by design.
        assert!(Config::parse(&format!("{base}[pools.p]\npath = '/devices/p'\n"), "t").is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = Config::parse("state_dir='/a'\nsocket='/b'\nbogus=1\n", "t").unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
    }

    #[test]
    fn node_id_is_not_a_setting_and_node_name_is_validated() {
        let base = "state_dir='/a'\nsocket='/b'\n";
        let e = Config::parse(
            &format!("{base}node_id='0f8fad5b-d9cb-469f-a165-70867728950e'\n"),
            "t",
        )
        .unwrap_err();
        assert!(
            e.message.contains("node_id cannot be set") && e.message.contains("node-id"),
            "{e}"
        );
        let c = Config::parse(&format!("{base}node_name='n1.example'\n"), "t").unwrap();
        assert_eq!(c.node_name.as_deref(), Some("n1.example"));
        assert_eq!(Config::embedded().node_name, None);
        for bad in ["''", "'a b'", "'-x'", "'a:b'"] {
            let e = Config::parse(&format!("{base}node_name={bad}\n"), "t").unwrap_err();
            assert!(e.message.contains("node_name"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for text in [
            "state_dir='rel'\nsocket='/b'",
            "state_dir='/a'\nsocket='/b'\nmax_frame_size=1",
            "state_dir='/a'\nsocket='/b'\n[limits]\nrequest_buffer_bytes=1000",
            "state_dir='/a'\nsocket='/b'\n[limits]\nmax_connections=1",
            "state_dir='/a'\nsocket='/b'\n[limits]\nmax_connections_per_uid=0",
            "state_dir='/a'\nsocket='/b'\n[limits]\nframe_timeout=0",
            "state_dir='/a'\nsocket='/b'\n[limits]\nmax_subscriptions=0",
            "state_dir='/a'\nsocket='/b'\n[limits]\ndriver_probe_interval=0",
            "state_dir='/a'\nsocket='/b'\n[limits]\nmax_conections=5",
            "state_dir='/a'\nsocket='/b'\n[pools.'../x']\n",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\npath='rel'",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nkind='zfs'",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nreserved_percentage=100",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nreserved_percentage=-1",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nmax_over_subscription_ratio=0.5",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nmax_over_subscription_ratio=nan",
            "state_dir='/a'\nsocket='/b'\n[iscsi]\ndriver='kernel'",
            "state_dir='/a'\nsocket='/b'\n[iscsi]\niqn_prefix='bad prefix'",
            "state_dir='/a'\nsocket='/b'\n[iscsi]\nportal='nohost'",
            "state_dir='/a'\nsocket='/b'\n[nfs]\nexports_file='rel'",
            "state_dir='/a'\nsocket='/b'\n[nvme]\ndriver='tgt'",
            "state_dir='/a'\nsocket='/b'\n[nvme]\nnqn_prefix='iqn.2026-12.io.shelf'",
            "state_dir='/a'\nsocket='/b'\n[nvme]\nportal='nohost'",
            "state_dir='/a'\nsocket='/b'\n[nvme]\nconfigfs='rel'",
            "state_dir='/a'\nsocket='/b'\n[nvme]\nport_id=70000",
            "state_dir='/a'\nsocket='/b'\n[nvme]\nportl='127.0.0.1:4420'",
            "state_dir='/a'\nsocket='/b'\n[access]\nadmin_users=['a b']",
            "state_dir='/a'\nsocket='/b'\n[access]\nadmins=['root']",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nkind='lvm'\nvolume_group='vg'",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nkind='lvm'\nvolume_group='v g'\nthin_pool='t'",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nkind='lvm'\nvolume_group='vg'\nthin_pool='t'\npath='/x'",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nkind='lvm'\nvolume_group='vg'\nthin_pool='t'\ndata_threshold_percent=0",
            "state_dir='/a'\nsocket='/b'\n[pools.p]\nvolume_group='vg'",
            "state_dir='/a'\nsocket='/b'\n[images]\nimport_dirs=['rel']",
            "state_dir='/a'\nsocket='/b'\n[images]\nimport_dirs=['/a/../etc']",
            "state_dir='/a'\nsocket='/b'\n[images]\nmax_uploads=0",
        ] {
            assert!(Config::parse(text, "t").is_err(), "{text}");
        }
    }

    #[test]
    fn lvm_pools_resolve_to_their_thin_pool() {
        let c = Config::parse(
            "state_dir='/a'\nsocket='/b'\n[pools.fast]\nkind='lvm'\nvolume_group='vg0'\nthin_pool='tp'\nmetadata_threshold_percent=70\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.resolved_pools()["fast"],
            (PoolKind::Lvm, PathBuf::from("/dev/vg0/tp"))
        );
        let s = c.lvm_settings("fast").unwrap();
        assert_eq!(
            (s.data_threshold_percent, s.metadata_threshold_percent),
            (90, 70)
        );
        assert!(c.lvm_settings("default").is_none());
    }
}
