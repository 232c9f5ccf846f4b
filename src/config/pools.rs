//! The `[pools.*]` sections: each pool's kind, place and capacity policy, and what the
//! daemon derives from them (resolved paths, LVM settings, capacity policies).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Config;
use crate::model::{CapacityPolicy, PoolKind};

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
    pub(super) fn validate_kind(&self, name: &str) -> Result<(), String> {
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

fn default_ratio() -> f64 {
    CapacityPolicy::default().max_over_subscription_ratio
}
fn default_kind() -> PoolKind {
    PoolKind::File
}

impl Config {
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
}

/// A file pool's directory must not be under `/dev`: there, a block device or a link to
/// one that a tenant plants in place of its volume would pass for an LVM pool's volume
/// (and LIO would pick its `block` backstore for it). Checked on the path as written
/// (`..` taken lexically) and, when it exists, as it resolves (symbolic links followed).
pub(super) fn validate_file_pool_path(name: &str, path: &Path) -> Result<(), String> {
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
