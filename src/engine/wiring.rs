//! Wiring: the engine built from the config (pools, drivers, runners), pools added on
//! reload, and the lookups the operations use to reach a pool or a driver's guard.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{blocking, drivers, upload, Engine, LockTable};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::model::Pool as PoolInfo;
use crate::pool::{FilePool, Pool};
use crate::store::Store;
use crate::sys::cmd::Runner;

impl Engine {
    /// Open the pools named in the config (creating their directories) and wrap the store;
    /// `node` is this node's identity ([`super::load_node`]).
    pub async fn new(config: &Config, store: Store, node: crate::model::Node) -> Result<Engine> {
        let mut pools: BTreeMap<String, Arc<dyn Pool>> = BTreeMap::new();
        for (name, (kind, path)) in config.resolved_pools() {
            let pool = open_pool(config, &name, kind, path).await?;
            pools.insert(name, pool);
        }
        let crate::export::registry::Registry {
            exporters,
            protocols,
        } = crate::export::registry::build(config);
        let jobs: Arc<super::jobs::Jobs> = Arc::default();
        let events: Arc<super::jobs::EventBus> = Arc::default();
        let streams = Arc::new(super::streams::Streams::new(
            config,
            store.clone(),
            jobs.clone(),
            events.clone(),
        ));
        Ok(Engine {
            store,
            pools: RwLock::new(pools),
            policies: RwLock::new(config.capacity_policies()),
            export_guards: exporters
                .keys()
                .map(|d| (*d, async_lock::RwLock::new(())))
                .collect(),
            exporters,
            protocols,
            locks: LockTable::default(),
            jobs,
            events,
            uploads: upload::Uploads::default(),
            receives: super::receive::Receives::new(config.limits.receive_idle_timeout),
            streams,
            exporting: Arc::default(),
            images: config.images.clone(),
            runner: Runner::new(Duration::from_secs(config.command_timeout)),
            formatter: crate::pool::format::Formatter::new(
                Runner::new(Duration::from_secs(config.command_timeout)),
                config.mount_base(),
            ),
            default_fs: config.filesystem.default,
            driver_cache: drivers::DriverCache::default(),
            allocations: Default::default(),
            node,
        })
    }

    /// Take a reloaded config's bounds on byte streams.
    pub fn reload_streams(&self, config: &Config) {
        self.streams.update(config);
        self.receives.update(config);
    }

    /// Abort the byte streams still open (shelfd is stopping): their sources remove what
    /// they staged.
    pub async fn shutdown_streams(&self) {
        self.streams.shutdown().await;
    }

    /// Add pools that a reloaded config names and we do not have yet; report what changed.
    pub async fn reload_pools(&self, config: &Config) -> Vec<String> {
        let mut notes = Vec::new();
        let policies = config.capacity_policies();
        {
            let mut current = self.policies.write().expect("policies lock");
            for (name, policy) in &policies {
                if current.get(name) != Some(policy) {
                    notes.push(format!("pool {name}: capacity policy {policy:?}"));
                }
            }
            *current = policies;
        }
        for (name, (kind, path)) in config.resolved_pools() {
            let existing = self.pools.read().expect("pools lock").get(&name).cloned();
            match existing {
                Some(p) if p.location() != path.display().to_string() || p.kind() != kind => {
                    notes.push(format!(
                        "pool {name}: changing its kind or path needs a restart; kept {}",
                        p.location()
                    ));
                }
                Some(_) => {}
                None => match open_pool(config, &name, kind, path).await {
                    Ok(p) => {
                        self.pools
                            .write()
                            .expect("pools lock")
                            .insert(name.clone(), p);
                        notes.push(format!("pool {name} added"));
                    }
                    Err(e) => notes.push(format!("pool {name} not added: {e}")),
                },
            }
        }
        notes
    }

    /// Hold off reconciliation of driver `d` (see `export_guards`); the caller holds the
    /// share's lock.
    pub(super) async fn export_guard(&self, d: Driver) -> async_lock::RwLockReadGuard<'_, ()> {
        self.export_guards[&d].read().await
    }

    /// [`Engine::export_guard`] for every driver these exports use, in driver order.
    pub(super) async fn export_guards_for(
        &self,
        rows: &[crate::store::ExportRow],
    ) -> Vec<async_lock::RwLockReadGuard<'_, ()>> {
        let drivers: std::collections::BTreeSet<Driver> =
            rows.iter().map(|r| r.export.driver).collect();
        let mut guards = Vec::new();
        for d in drivers {
            guards.push(self.export_guard(d).await);
        }
        guards
    }

    /// The store (for shutdown).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The names of the configured pools.
    pub(super) fn pool_names(&self) -> Vec<String> {
        self.pools
            .read()
            .expect("pools lock")
            .keys()
            .cloned()
            .collect()
    }

    pub(super) fn pool(&self, name: &str) -> Result<Arc<dyn Pool>> {
        self.pools
            .read()
            .expect("pools lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no pool {name:?}")))
    }

    /// The pool a create goes to: the one named, or `default`, or the only one.
    pub(super) fn pick_pool(&self, name: Option<&str>) -> Result<Arc<dyn Pool>> {
        if let Some(n) = name {
            return self.pool(n);
        }
        let pools = self.pools.read().expect("pools lock");
        if let Some(p) = pools.get("default") {
            return Ok(p.clone());
        }
        if pools.len() == 1 {
            return Ok(pools.values().next().expect("one pool").clone());
        }
        Err(Error::Invalid(
            "several pools are configured; say which with pool".into(),
        ))
    }

    /// `pool.show`'s report: the pool's usage, totals and capacity policy.
    pub(super) async fn pool_info(&self, name: &str) -> Result<PoolInfo> {
        let pool = self.pool(name)?;
        let policy = self.policy(name);
        let p = pool.clone();
        let usage = blocking(move || p.usage()).await?;
        let pname = name.to_string();
        let (provisioned, shares, snapshots) = self
            .store
            .call(move |c| crate::store::pool_totals(c, &pname))
            .await?;
        let allocated = self.pool_allocation(&pool).await.map(|a| a.total);
        Ok(PoolInfo {
            name: name.to_string(),
            kind: pool.kind(),
            path: pool.location(),
            size: usage.size,
            used: usage.used,
            free: usage.free,
            provisioned,
            allocated,
            discard: Some(self.pool_discard(&pool)),
            shares,
            snapshots,
            reflink: pool.reflink(),
            reserved: policy.reserved(usage.size),
            reserved_percentage: policy.reserved_percentage,
            max_over_subscription_ratio: policy.max_over_subscription_ratio,
            provisioning_limit: policy.provisioning_limit(usage.size),
            available_to_provision: policy
                .provisioning_limit(usage.size)
                .saturating_sub(provisioned),
        })
    }
}

/// A pool of `kind` as the config describes it, not yet prepared.
pub fn make_pool(
    config: &Config,
    name: &str,
    kind: crate::model::PoolKind,
    path: std::path::PathBuf,
) -> Result<Box<dyn Pool>> {
    match kind {
        crate::model::PoolKind::File => Ok(Box::new(FilePool::new(name, path))),
        crate::model::PoolKind::Lvm => {
            let settings = config.lvm_settings(name).ok_or_else(|| {
                Error::Invalid(format!("pool {name}: no volume_group or thin_pool"))
            })?;
            Ok(Box::new(crate::pool::LvmPool::new(name, settings)))
        }
    }
}

async fn open_pool(
    config: &Config,
    name: &str,
    kind: crate::model::PoolKind,
    path: std::path::PathBuf,
) -> Result<Arc<dyn Pool>> {
    let mut p = make_pool(config, name, kind, path)?;
    let p = blocking(move || p.prepare().map(|_| p)).await?;
    log::info!(
        "pool {name}: {} pool at {} (instant snapshots: {})",
        p.kind().as_str(),
        p.location(),
        p.reflink()
    );
    Ok(Arc::from(p))
}
