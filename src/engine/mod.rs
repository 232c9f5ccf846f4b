//! The operations: one function per request, each validating with [`crate::model`],
//! recording in [`crate::store`] before acting through a [`crate::pool::Pool`], and
//! recording completion after.
//!
//! Crash safety: every multi-step operation first commits a row in a transitional state
//! (`creating`, `deleting`) or an intent, then acts, then commits the settled state. At
//! start-up, [`Engine::recover`] finishes or undoes whatever a crash interrupted, before
//! the socket opens. A reply of `ok` is sent only after the final commit.
//!
//! Results are typed: a read returns its object, list or report; a change returns a
//! [`crate::model::Outcome`] (created / already there / changed / unchanged / deleted /
//! already gone) around the object it is about. [`Engine::dispatch`] turns each into an
//! [`Answer`] with the constructor of `proto::result` for its family (the one place a
//! reply's shape and its `changed` field are written), and the answer carries the event
//! the outcome stands for, which [`Engine::handle`] publishes once the operation has
//! returned (after its final commit, before the reply). A new operation returns its typed
//! value, an `Outcome`, or a `Result<Answer>` built with one of those constructors.

mod attach;
mod capacity;
mod drivers;
pub mod events;
mod export;
pub mod failpoint;
mod formatted;
mod image;
mod import;
pub mod jobs;
mod keyed;
mod locks;
mod metadata;
mod rebuild;
mod reconcile;
mod recover;
mod share;
mod snapshot;
mod stamp;
mod upload;
mod verify;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ciborium::Value;
use serde::Serialize;

pub use locks::LockTable;
pub use rebuild::{rebuild_db, RebuildReport};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::export::protocol::ProtocolHandler;
use crate::export::Exporter;
use crate::model::Pool as PoolInfo;
use crate::model::{CapacityPolicy, Driver, Outcome};
use crate::pool::{FilePool, Pool};
use crate::proto::{Answer, Hello, Request, FEATURES, PROTOCOL_VERSIONS};
use crate::store::Store;
use crate::sys::cmd::Runner;

/// The engine: the database, the pools, the export drivers and the per-object locks.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    pools: RwLock<BTreeMap<String, Arc<dyn Pool>>>,
    /// Each pool's capacity policy; replaced on reload.
    policies: RwLock<BTreeMap<String, CapacityPolicy>>,
    exporters: BTreeMap<Driver, Arc<dyn Exporter>>,
    /// Each protocol's rules (naming, clients, connection_info).
    protocols: BTreeMap<crate::model::Protocol, Arc<dyn ProtocolHandler>>,
    locks: LockTable,
    /// One per driver. A change to a driver's exports holds it shared from its first row
    /// change to its last daemon change; reconciling that driver holds it alone, so it never
    /// works from a view of the tree that a concurrent attach or detach has made stale.
    /// Taken after the share lock, in driver order, and never twice by one request (the
    /// lock prefers writers: a waiting reconcile would deadlock it). Per driver, so a
    /// reconcile waiting behind a hung tgtadm holds up other tgt changes only, not NFS or
    /// non-export work.
    export_guards: BTreeMap<Driver, async_lock::RwLock<()>>,
    /// Long-running work.
    jobs: Arc<jobs::Jobs>,
    /// The event stream.
    events: Arc<jobs::EventBus>,
    /// Image uploads in progress.
    uploads: upload::Uploads,
    /// The image cache's settings (import directories, upload limit).
    images: crate::config::ImagesConfig,
    /// The runner for the engine's own commands (qemu-img).
    runner: Runner,
    /// Formats, mounts and freezes `filesystem` shares.
    formatter: crate::pool::format::Formatter,
    /// The filesystem of a `filesystem` share whose create names none.
    default_fs: crate::model::FsKind,
    /// The drivers' status as last probed (hello and pool.show read only this).
    driver_cache: drivers::DriverCache,
}

/// Convert a result struct to a CBOR value.
fn to_value<T: Serialize>(v: &T) -> Result<Value> {
    Value::serialized(v).map_err(|e| Error::Internal(format!("encoding a reply: {e}")))
}

/// A read's typed value as its answer.
fn read<T: Serialize>(v: Result<T>) -> Result<Answer> {
    v.and_then(|v| answer(Answer::read(&v)))
}

/// A change about one object as its answer (`{<kind>: object, changed}`).
fn object<T: crate::model::Object + Serialize>(o: Result<Outcome<T>>) -> Result<Answer> {
    o.and_then(|o| answer(Answer::object(&o)))
}

/// A removal as its answer (`{deleted: id, changed}`).
fn deleted(o: Result<Outcome<String>>) -> Result<Answer> {
    o.map(|o| Answer::deleted(&o))
}

/// An encoding fault as the engine's error.
fn answer(a: std::result::Result<Answer, crate::proto::EncodeError>) -> Result<Answer> {
    a.map_err(|e| Error::Internal(e.to_string()))
}

/// Build a CBOR map from pairs (for the server's own replies).
pub fn map_value(pairs: Vec<(&str, Value)>) -> Value {
    map(pairs)
}

/// Build a CBOR map from pairs.
fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::Text(k.to_string()), v))
            .collect(),
    )
}

/// `audit.list {totals: true}`: the entries and the counts.
#[derive(Serialize)]
struct AuditPage<E, C, R> {
    entries: E,
    totals: AuditCounts<C, R>,
}

/// `audit.list`'s `totals`.
#[derive(Serialize)]
struct AuditCounts<C, R> {
    changes: C,
    refusals: R,
    unwritten: u64,
}

/// Run a blocking closure off the event loop.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    smol::unblock(f).await
}

impl Engine {
    /// Open the pools named in the config (creating their directories) and wrap the store.
    pub async fn new(config: &Config, store: Store) -> Result<Engine> {
        let mut pools: BTreeMap<String, Arc<dyn Pool>> = BTreeMap::new();
        for (name, (kind, path)) in config.resolved_pools() {
            let pool = open_pool(config, &name, kind, path).await?;
            pools.insert(name, pool);
        }
        let crate::export::registry::Registry {
            exporters,
            protocols,
        } = crate::export::registry::build(config);
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
            jobs: Arc::default(),
            events: Arc::default(),
            uploads: upload::Uploads::default(),
            images: config.images.clone(),
            runner: Runner::new(Duration::from_secs(config.command_timeout)),
            formatter: crate::pool::format::Formatter::new(
                Runner::new(Duration::from_secs(config.command_timeout)),
                config.mount_base(),
            ),
            default_fs: config.filesystem.default,
            driver_cache: drivers::DriverCache::default(),
        })
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
    async fn export_guard(&self, d: Driver) -> async_lock::RwLockReadGuard<'_, ()> {
        self.export_guards[&d].read().await
    }

    /// [`Engine::export_guard`] for every driver these exports use, in driver order.
    async fn export_guards_for(
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
    fn pool_names(&self) -> Vec<String> {
        self.pools
            .read()
            .expect("pools lock")
            .keys()
            .cloned()
            .collect()
    }

    fn pool(&self, name: &str) -> Result<Arc<dyn Pool>> {
        self.pools
            .read()
            .expect("pools lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no pool {name:?}")))
    }

    /// The pool a create goes to: the one named, or `default`, or the only one.
    fn pick_pool(&self, name: Option<&str>) -> Result<Arc<dyn Pool>> {
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

    /// Run one request: its typed result, encoded for the wire. The event the outcome
    /// stands for is published here, once the operation has made its final commit and
    /// before the reply is sent; a retry answered from an idempotency key's kept answer
    /// never comes here, so it publishes nothing. The event's `op` is the request's wire
    /// name ([`Request::op`]).
    pub async fn handle(&self, req: Request) -> Result<Value> {
        let op = req.op();
        let answer = self.dispatch(req).await?;
        if let Some(change) = answer.event() {
            self.events
                .publish(change.kind.as_str(), op, &change.object, None);
        }
        Ok(answer.into_value())
    }

    /// The one dispatch: every operation, each returning its typed result (an
    /// [`crate::model::Outcome`] around its object for a change), encoded by the
    /// constructor of `proto::result` for its family. Every request is listed; there is
    /// no wildcard.
    async fn dispatch(&self, req: Request) -> Result<Answer> {
        match req {
            Request::Hello => Ok(self.with_driver_status(answer(Answer::read(&self.hello()))?)),
            Request::PoolList => {
                let mut out = Vec::new();
                for n in self.pool_names() {
                    out.push(self.pool_info(&n).await?);
                }
                answer(Answer::read(&out))
            }
            Request::PoolShow(a) => {
                let pool = answer(Answer::read(&self.pool_info(&a.name).await?))?;
                Ok(self.with_driver_status(pool))
            }
            Request::ShareCreate(a) => object(self.create_share(a).await),
            Request::ShareList(a) => read(self.list_shares(a).await),
            Request::ShareShow(a) => self.show_share(a).await,
            Request::ShareResize(a) => self.resize_share(a).await,
            Request::ShareDelete(a) => self.delete_share(a).await,
            Request::ShareSetMetadata(a) => object(self.set_share_metadata(a).await),
            Request::ShareClone(a) => self.clone_share(a).await,
            Request::SnapshotCreate(a) => self.create_snapshot(a).await,
            Request::SnapshotList(a) => read(self.list_snapshots(a).await),
            Request::SnapshotShow(a) => read(self.show_snapshot(a).await),
            Request::SnapshotDelete(a) => deleted(self.delete_snapshot(a).await),
            Request::Tree(a) => read(self.tree(a).await),
            Request::ExportCreate(a) => self.create_export(a).await,
            Request::ExportList(a) => self.list_exports(a).await,
            Request::ExportShow(a) => self.show_export(a).await,
            Request::ExportDelete(a) => self.delete_export(a).await,
            Request::ShareAttach(a) => self.attach_share(a).await,
            Request::ShareDetach(a) => self.detach_share(a).await,
            Request::AttachmentList(a) => self.list_attachments(a).await,
            Request::Reconcile => {
                let report = self.reconcile().await?;
                let repaired = !report.findings.is_empty();
                answer(Answer::reconciled(&Outcome::changed_if(repaired, report)))
            }
            Request::Verify => read(self.verify().await),
            Request::ImageImport(a) => self.import_image(a).await,
            Request::ImageList(a) => read(self.list_images(a).await),
            Request::UploadBegin(a) => self.begin_upload(a).await,
            Request::UploadChunk(a) => self.upload_chunk(a).await,
            Request::UploadFinish(a) => self.finish_upload(a).await,
            Request::UploadAbort(a) => deleted(self.abort_upload(a).await),
            Request::ImageShow(a) => self.show_image(a).await,
            Request::ImageDelete(a) => deleted(self.delete_image(a).await),
            Request::JobList => {
                let rows = self.jobs.list(&self.store).await?;
                read(Ok(rows.iter().map(jobs::job_value).collect::<Vec<_>>()))
            }
            Request::JobShow(a) => read(Ok(jobs::job_value(
                &self.jobs.show(&self.store, &a.job).await?,
            ))),
            Request::JobCancel(a) => {
                let cancelled = self.jobs.cancel(&a.job)?;
                Ok(Answer::job_cancelled(&Outcome::changed_if(
                    cancelled, a.job,
                )))
            }
            Request::EventsSubscribe(_) => Err(Error::Invalid(
                "events.subscribe is answered by the connection, not the engine".into(),
            )),
            Request::AuditList(a) => self.list_audit(a).await,
        }
    }

    /// The event bus (subscriptions are made by connections).
    pub fn events(&self) -> &jobs::EventBus {
        &self.events
    }

    /// Record an audit entry. A refusal is queued (refusals are aggregated and written
    /// in batches); any other entry records a state change and is committed before this
    /// returns, so the reply that follows never says `ok` for an unrecorded change.
    pub async fn audit(&self, entry: crate::store::AuditEntry) {
        match entry.kind() {
            crate::store::AuditKind::Refusal => self.store.audit(entry),
            crate::store::AuditKind::Change => self.store.audit_durable(entry).await,
        }
    }

    /// Record a refusal that is not a parsed request's (e.g. a connection refused because
    /// its peer has no role: `op` is `"connect"`). Refusals of one uid, role and op in one
    /// minute become one entry with a count, so a flood costs one row a minute.
    pub fn record_refusal(&self, uid: u32, gid: u32, pid: i32, role: &str, op: &str, why: &str) {
        self.store.audit(crate::store::AuditEntry::refusal(
            uid, gid, pid, role, op, why,
        ));
    }

    /// `audit.list`: audit entries (oldest first, after `since`), with `totals` when
    /// asked: `{entries, totals: {changes, refusals, unwritten}}`.
    async fn list_audit(&self, a: crate::proto::AuditListArgs) -> Result<Answer> {
        let limit = a.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::Invalid(format!(
                "limit {limit} must be between 1 and 1000"
            )));
        }
        self.store.flush_audit().await;
        let with_totals = a.totals.unwrap_or(false);
        let (entries, totals) = self
            .store
            .call(move |c| {
                let entries = crate::store::list_audit(c, a.since, limit, a.op.as_deref(), a.uid)?;
                let totals = if with_totals {
                    Some(crate::store::audit_totals(c)?)
                } else {
                    None
                };
                Ok((entries, totals))
            })
            .await?;
        let Some((changes, refusals)) = totals else {
            return answer(Answer::read(&entries));
        };
        answer(Answer::read(&AuditPage {
            entries,
            totals: AuditCounts {
                changes,
                refusals,
                unwritten: self.store.audit_unwritten(),
            },
        }))
    }

    /// `drivers` (each driver's cached status) and `drivers_age_ms` (how old the oldest
    /// probe is), added to a hello or pool.show answer.
    fn with_driver_status(&self, a: Answer) -> Answer {
        let (drivers, age) = self.driver_status();
        a.with("drivers", drivers)
            .with("drivers_age_ms", Value::Integer(age.into()))
    }

    /// `hello`'s fixed part: who we are and what we speak.
    fn hello(&self) -> Hello {
        Hello {
            server: crate::SERVER_NAME,
            version: crate::VERSION,
            protocols: PROTOCOL_VERSIONS,
            features: FEATURES,
        }
    }

    async fn pool_info(&self, name: &str) -> Result<PoolInfo> {
        let pool = self.pool(name)?;
        let policy = self.policy(name);
        let p = pool.clone();
        let usage = blocking(move || p.usage()).await?;
        let pname = name.to_string();
        let (provisioned, shares, snapshots) = self
            .store
            .call(move |c| crate::store::pool_totals(c, &pname))
            .await?;
        Ok(PoolInfo {
            name: name.to_string(),
            kind: pool.kind(),
            path: pool.location(),
            size: usage.size,
            used: usage.used,
            free: usage.free,
            provisioned,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `audit.list {totals: true}` encodes as the hand-built map it replaced.
    #[test]
    fn the_audit_page_is_the_old_entries_and_totals_map() {
        let entries = vec![BTreeMap::from([("op", "share.create")])];
        let (changes, refusals) = (BTreeMap::from([("share.create", 1)]), 0u64);
        let new = Answer::read(&AuditPage {
            entries: entries.clone(),
            totals: AuditCounts {
                changes: changes.clone(),
                refusals,
                unwritten: 3,
            },
        })
        .unwrap();
        let old = map(vec![
            ("entries", to_value(&entries).unwrap()),
            (
                "totals",
                map(vec![
                    ("changes", to_value(&changes).unwrap()),
                    ("refusals", to_value(&refusals).unwrap()),
                    ("unwritten", Value::Integer(3.into())),
                ]),
            ),
        ]);
        let bytes = |v: &Value| {
            let mut out = Vec::new();
            ciborium::into_writer(v, &mut out).unwrap();
            out
        };
        assert_eq!(bytes(new.value()), bytes(&old));
    }
}
