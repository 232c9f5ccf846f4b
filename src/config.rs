//! shelfd's configuration: a strict TOML file, with an embedded default.
//!
//! The embedded default is `image/shelf.toml`, the same file the appliance installs as
//! `/etc/shelf/shelf.toml`, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{
    validate_iqn, validate_name, validate_nqn, CapacityPolicy, Driver, FsKind, PoolKind, Protocol,
};

/// The default config, compiled in.
pub const EMBEDDED: &str = include_str!("../image/shelf.toml");

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
    /// Directory for the database, the lock file and default pools.
    pub state_dir: PathBuf,
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
}

/// Settings of the image cache (`image.import`, `image.upload.*`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Directories `image.import {source}` may read from (absolute; none by default, so
    /// only uploads work). A source is opened beneath one of them without following any
    /// symlink.
    pub import_dirs: Vec<PathBuf>,
    /// Uploads that may be in progress at once (1 to 1024).
    pub max_uploads: usize,
}

/// Default of `images.max_uploads`.
pub const DEFAULT_MAX_UPLOADS: usize = 4;

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            import_dirs: Vec::new(),
            max_uploads: DEFAULT_MAX_UPLOADS,
        }
    }
}

impl ImagesConfig {
    fn validate(&self) -> Result<(), String> {
        for d in &self.import_dirs {
            if !d.is_absolute() || d.components().any(|c| c.as_os_str() == "..") {
                return Err(format!(
                    "images.import_dirs: {d:?} must be an absolute path without `..`"
                ));
            }
        }
        if !(1..=1024).contains(&self.max_uploads) {
            return Err(format!(
                "images.max_uploads {} must be between 1 and 1024",
                self.max_uploads
            ));
        }
        Ok(())
    }
}

/// Bounds on what peers may cost the daemon (see docs/security.md, section 3).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Bytes of request frames all connections together may hold while they arrive,
    /// beyond the first 4 KiB of each frame (1 MiB to 4 GiB). Read at start-up only.
    pub request_buffer_bytes: u64,
    /// Open connections in all (16 to 65536); admins may go past it by shedding idle
    /// non-admin connections.
    pub max_connections: usize,
    /// Open connections per uid (1 to 65536); admins are exempt.
    pub max_connections_per_uid: usize,
    /// Seconds a frame may take to arrive once its first byte has (1 to 3600).
    pub frame_timeout: u64,
    /// Seconds a connection with nothing in flight and no subscription may stay silent
    /// before it is closed (0: never).
    pub idle_timeout: u64,
    /// Seconds one reply or event frame may take to be written before the connection is
    /// closed (1 to 3600): a peer that stops reading cannot hold its requests' slots, its
    /// queued replies or its descriptor.
    pub write_timeout: u64,
    /// Event subscriptions open in all (1 to 65536).
    pub max_subscriptions: usize,
    /// Seconds between background probes of the export drivers that `hello` and
    /// `pool.show` report (1 to 3600).
    pub driver_probe_interval: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            request_buffer_bytes: 32 << 20,
            max_connections: 1024,
            max_connections_per_uid: 128,
            frame_timeout: 30,
            idle_timeout: 3600,
            write_timeout: 30,
            max_subscriptions: 1024,
            driver_probe_interval: 30,
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), String> {
        let l = self;
        let checks: [(&str, u64, u64, u64); 7] = [
            (
                "request_buffer_bytes",
                l.request_buffer_bytes,
                1 << 20,
                4 << 30,
            ),
            ("max_connections", l.max_connections as u64, 16, 65536),
            (
                "max_connections_per_uid",
                l.max_connections_per_uid as u64,
                1,
                65536,
            ),
            ("frame_timeout", l.frame_timeout, 1, 3600),
            ("write_timeout", l.write_timeout, 1, 3600),
            ("max_subscriptions", l.max_subscriptions as u64, 1, 65536),
            ("driver_probe_interval", l.driver_probe_interval, 1, 3600),
        ];
        for (name, v, lo, hi) in checks {
            if !(lo..=hi).contains(&v) {
                return Err(format!("limits.{name} {v} must be between {lo} and {hi}"));
            }
        }
        Ok(())
    }
}

/// Settings of formatted shares.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// The filesystem a `filesystem` share gets when the request names none.
    pub default: FsKind,
    /// Where shares are mounted, one directory per share id; empty: `<state_dir>/mounts`.
    pub mount_base: PathBuf,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        FilesystemConfig {
            default: FsKind::Xfs,
            mount_base: PathBuf::new(),
        }
    }
}

/// Access control: the socket's group and the two roles. Users and groups are names or
/// numeric ids. root, and the user shelfd runs as, are always `admin`; a peer with
/// neither role is refused every request with `permission_denied`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// The group the socket belongs to (mode 0660); empty: shelfd's own group.
    pub socket_group: String,
    /// Users with every right.
    pub admin_users: Vec<String>,
    /// Groups whose members have every right.
    pub admin_groups: Vec<String>,
    /// Users who may only read (hello, list, show, tree).
    pub reader_users: Vec<String>,
    /// Groups whose members may only read.
    pub reader_groups: Vec<String>,
}

/// iSCSI settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IscsiConfig {
    /// Default driver for iSCSI exports: `tgt` or `lio`.
    pub driver: Driver,
    /// Targets are named `<iqn_prefix>:<share-name>`.
    pub iqn_prefix: String,
    /// The portal initiators are told to log in to (`connection_info.target_portal`).
    pub portal: String,
    /// tgtd's control port (`tgtadm -C N`; 0 is tgtd's default instance).
    pub tgt_control_port: u32,
}

impl Default for IscsiConfig {
    fn default() -> Self {
        IscsiConfig {
            driver: Driver::Tgt,
            iqn_prefix: "iqn.2026-11.org.example.shelf".into(),
            portal: "127.0.0.1:3260".into(),
            tgt_control_port: 0,
        }
    }
}

/// NFS settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NfsConfig {
    /// Default driver for NFS exports: `kernel` or `ganesha`.
    pub driver: Driver,
    /// The exports file shelfd owns (kernel driver).
    pub exports_file: PathBuf,
    /// The file of EXPORT blocks shelfd owns, included from ganesha's config.
    pub ganesha_exports: PathBuf,
    /// ganesha's pid file (shelfd sends it SIGHUP to reload exports).
    pub ganesha_pidfile: PathBuf,
    /// The address NFS clients mount from (`host:/path`); empty: this host's name.
    pub host: String,
}

impl Default for NfsConfig {
    fn default() -> Self {
        NfsConfig {
            driver: Driver::Kernel,
            exports_file: PathBuf::from("/etc/exports.d/shelf.exports"),
            ganesha_exports: PathBuf::from("/etc/ganesha/shelf-exports.conf"),
            ganesha_pidfile: PathBuf::from("/run/ganesha/ganesha.pid"),
            host: String::new(),
        }
    }
}

/// NVMe over TCP settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmeConfig {
    /// Default driver for NVMe exports: `nvmet` (the kernel target, through configfs).
    pub driver: Driver,
    /// Subsystems are named `<nqn_prefix>:<share-name>`; shelf owns every subsystem
    /// under this prefix (reconcile removes the ones the tree does not hold).
    pub nqn_prefix: String,
    /// The TCP portal (`ADDRESS:PORT`) the nvmet port listens on and hosts are told to
    /// connect to (`connection_info.data.portals`).
    pub portal: String,
    /// The nvmet port id (`<configfs>/ports/<port_id>`) shelf links its subsystems to.
    pub port_id: u16,
    /// nvmet's configfs directory (the kernel's is `/sys/kernel/config/nvmet`).
    pub configfs: PathBuf,
}

impl Default for NvmeConfig {
    fn default() -> Self {
        NvmeConfig {
            driver: Driver::Nvmet,
            nqn_prefix: "nqn.2026-12.io.shelf".into(),
            portal: "127.0.0.1:4420".into(),
            port_id: 1,
            configfs: PathBuf::from("/sys/kernel/config/nvmet"),
        }
    }
}

/// One pool's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// How the pool stores volumes.
    #[serde(default = "default_kind")]
    pub kind: PoolKind,
    /// The pool's directory; default `<state_dir>/pools/<name>`.
    pub path: Option<PathBuf>,
    /// Percent of the pool's storage kept free: new work is refused below it (0 to 99).
    #[serde(default)]
    pub reserved_percentage: u8,
    /// How many times its usable size the pool's shares may add up to (1.0 to 1000.0).
    #[serde(default = "default_ratio")]
    pub max_over_subscription_ratio: f64,
    /// `kind = "lvm"`: the volume group holding the thin pool.
    pub volume_group: Option<String>,
    /// `kind = "lvm"`: the thin pool LV in that volume group.
    pub thin_pool: Option<String>,
    /// `kind = "lvm"`: refuse new work once the thin pool's data is this full (1 to 100;
    /// default 90).
    pub data_threshold_percent: Option<u8>,
    /// `kind = "lvm"`: refuse new work once the thin pool's metadata is this full (1 to 100;
    /// default 80).
    pub metadata_threshold_percent: Option<u8>,
}

/// Default data threshold of LVM thin pools (percent).
pub const DEFAULT_DATA_THRESHOLD: u8 = 90;
/// Default metadata threshold of LVM thin pools (percent): a thin pool whose metadata runs
/// out goes read-only, which is worse than running out of data, so it is kept further away.
pub const DEFAULT_METADATA_THRESHOLD: u8 = 80;

/// Whether `name` is usable as an LVM VG or LV name: `[A-Za-z0-9+_.-]`, 1 to 63 characters,
/// not starting with `-`, not `.` or `..`.
fn valid_lvm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

impl PoolConfig {
    /// Check the fields that depend on the kind.
    fn validate_kind(&self, name: &str) -> Result<(), String> {
        let lvm_fields = self.volume_group.is_some()
            || self.thin_pool.is_some()
            || self.data_threshold_percent.is_some()
            || self.metadata_threshold_percent.is_some();
        match self.kind {
            PoolKind::File if lvm_fields => Err(format!(
                "pools.{name}: volume_group, thin_pool and the thresholds are for kind = \"lvm\""
            )),
            PoolKind::File => Ok(()),
            PoolKind::Lvm => {
                if self.path.is_some() {
                    return Err(format!(
                        "pools.{name}: an lvm pool has no path; it lives at /dev/VG/THIN_POOL"
                    ));
                }
                for (key, value) in [
                    ("volume_group", &self.volume_group),
                    ("thin_pool", &self.thin_pool),
                ] {
                    match value {
                        None => return Err(format!("pools.{name}: kind = \"lvm\" needs {key}")),
                        Some(v) if !valid_lvm_name(v) => {
                            return Err(format!("pools.{name}.{key} {v:?} is not an LVM name"))
                        }
                        Some(_) => {}
                    }
                }
                for (key, value) in [
                    ("data_threshold_percent", self.data_threshold_percent),
                    (
                        "metadata_threshold_percent",
                        self.metadata_threshold_percent,
                    ),
                ] {
                    if let Some(v) = value.filter(|v| !(1..=100).contains(v)) {
                        return Err(format!("pools.{name}.{key} {v} must be between 1 and 100"));
                    }
                }
                Ok(())
            }
        }
    }
}

impl PoolConfig {
    /// The pool's capacity policy.
    pub fn capacity_policy(&self) -> CapacityPolicy {
        CapacityPolicy {
            reserved_percentage: self.reserved_percentage,
            max_over_subscription_ratio: self.max_over_subscription_ratio,
        }
    }
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
fn default_ratio() -> f64 {
    CapacityPolicy::default().max_over_subscription_ratio
}
fn default_kind() -> PoolKind {
    PoolKind::File
}

impl Config {
    /// Parse and validate config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            origin: origin.to_string(),
            message,
        };
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

    /// The pools to run, with every path resolved; a `default` file pool when none is set.
    pub fn resolved_pools(&self) -> BTreeMap<String, (PoolKind, PathBuf)> {
        let mut out = BTreeMap::new();
        for (name, p) in &self.pools {
            let path = match (&p.volume_group, &p.thin_pool) {
                (Some(vg), Some(tp)) if p.kind == PoolKind::Lvm => {
                    PathBuf::from(format!("/dev/{vg}/{tp}"))
                }
                _ => p
                    .path
                    .clone()
                    .unwrap_or_else(|| self.state_dir.join("pools").join(name)),
            };
            out.insert(name.clone(), (p.kind, path));
        }
        if out.is_empty() {
            out.insert(
                "default".to_string(),
                (PoolKind::File, self.state_dir.join("pools").join("default")),
            );
        }
        out
    }

    /// The directory formatted shares are mounted under.
    pub fn mount_base(&self) -> PathBuf {
        if self.filesystem.mount_base.as_os_str().is_empty() {
            self.state_dir.join("mounts")
        } else {
            self.filesystem.mount_base.clone()
        }
    }

    /// The settings of an LVM pool (`None` for other kinds or unknown names).
    pub fn lvm_settings(&self, name: &str) -> Option<crate::pool::LvmSettings> {
        let p = self.pools.get(name).filter(|p| p.kind == PoolKind::Lvm)?;
        Some(crate::pool::LvmSettings {
            volume_group: p.volume_group.clone()?,
            thin_pool: p.thin_pool.clone()?,
            data_threshold_percent: p.data_threshold_percent.unwrap_or(DEFAULT_DATA_THRESHOLD),
            metadata_threshold_percent: p
                .metadata_threshold_percent
                .unwrap_or(DEFAULT_METADATA_THRESHOLD),
            command_timeout: std::time::Duration::from_secs(self.command_timeout),
        })
    }

    /// Each pool's capacity policy (the implicit `default` pool gets the default policy).
    pub fn capacity_policies(&self) -> BTreeMap<String, CapacityPolicy> {
        self.resolved_pools()
            .into_keys()
            .map(|name| {
                let policy = self
                    .pools
                    .get(&name)
                    .map(PoolConfig::capacity_policy)
                    .unwrap_or_default();
                (name, policy)
            })
            .collect()
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

/// A file pool's directory must not be under `/dev`: there, a block device or a link to
/// one that a tenant plants in place of its volume would pass for an LVM pool's volume
/// (and LIO would pick its `block` backstore for it). Checked on the path as written
/// (`..` taken lexically) and, when it exists, as it resolves (symbolic links followed).
fn validate_file_pool_path(name: &str, path: &Path) -> Result<(), String> {
    use std::path::Component;
    let under_dev = |p: &Path| p.starts_with("/dev");
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    let resolved = std::fs::canonicalize(path).ok();
    if under_dev(&lexical) || resolved.as_deref().is_some_and(under_dev) {
        return Err(format!(
            "pools.{name}: a file pool cannot live under /dev ({path:?}): shelf takes \
             what is under /dev for block devices; put it on a filesystem elsewhere"
        ));
    }
    Ok(())
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
