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

mod allocation;
mod attach;
mod capacity;
mod drivers;
pub mod events;
mod export;
pub mod failpoint;
mod formatted;
mod gauges;
mod group;
mod image;
mod import;
pub mod jobs;
mod keyed;
mod locks;
mod metadata;
mod node;
mod pool_discard;
mod rebuild;
mod receive;
mod reconcile;
mod recover;
mod send;
mod share;
mod snapshot;
mod snapshot_export;
mod stamp;
mod status;
pub mod streams;
mod upload;
mod verify;
mod wiring;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ciborium::Value;
use serde::Serialize;

pub use gauges::{Gauges, JobFigures};
pub use locks::LockTable;
pub use node::load_node;
pub use rebuild::{rebuild_db, RebuildReport};
pub use wiring::make_pool;

use crate::error::{Error, Result};
use crate::export::protocol::ProtocolHandler;
use crate::export::Exporter;
use crate::model::{CapacityPolicy, Driver, Outcome};
use crate::pool::Pool;
use crate::proto::{Answer, Request};
use crate::store::{AuditSlot, Store};
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
    /// Snapshot receives in progress.
    receives: receive::Receives,
    /// Byte streams read with `stream.read` (`snapshot.export`, `snapshot.send`).
    streams: Arc<streams::Streams>,
    /// Snapshots being exported (their delete is `busy`).
    exporting: Arc<snapshot_export::Holds>,
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
    /// Each pool's last allocation pass (pool.show's and share.show's `allocated`).
    allocations: allocation::AllocationCache,
    /// Who this node is (`hello`'s `node`, a send stream's `node` and `node_id`).
    node: crate::model::Node,
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

/// Run a blocking closure off the event loop.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    smol::unblock(f).await
}

impl Engine {
    /// Run one request: its typed result, encoded for the wire. The event the outcome
    /// stands for is published here, once the operation has made its final commit and
    /// before the reply is sent; a retry answered from an idempotency key's kept answer
    /// never comes here, so it publishes nothing. The event's `op` is the request's wire
    /// name ([`Request::op`]). An operation whose final transaction writes the request's
    /// audit entry takes it from `slot` ([`crate::store::Store::write_recorded`]).
    pub async fn handle(&self, req: Request, slot: &AuditSlot) -> Result<crate::proto::Body> {
        let op = req.op();
        let answer = self.dispatch(req, slot).await?;
        if let Some(change) = answer.event() {
            self.events
                .publish(change.kind.as_str(), op, &change.object, None);
        }
        Ok(answer.into_body())
    }

    /// The one dispatch: every operation, each returning its typed result (an
    /// [`crate::model::Outcome`] around its object for a change), encoded by the
    /// constructor of `proto::result` for its family. Every request is listed; there is
    /// no wildcard. Each operation's future is boxed: inline, this future would be as
    /// large as the largest operation's (22 KiB), and every request, a `share.show`
    /// too, would allocate and copy that much; boxed, it allocates its own.
    async fn dispatch(&self, req: Request, slot: &AuditSlot) -> Result<Answer> {
        match req {
            Request::Hello => Ok(self.with_driver_status(answer(Answer::read(&self.hello()))?)),
            Request::PoolList => {
                let mut out = Vec::new();
                for n in self.pool_names() {
                    out.push(Box::pin(self.pool_info(&n)).await?);
                }
                answer(Answer::read(&out))
            }
            Request::PoolShow(a) => {
                let pool = answer(Answer::read(&Box::pin(self.pool_info(&a.name)).await?))?;
                Ok(self.with_driver_status(pool))
            }
            Request::ShareCreate(a) => object(Box::pin(self.create_share(a, slot)).await),
            Request::ShareList(a) => Box::pin(self.list_shares(a)).await,
            Request::ShareShow(a) => Box::pin(self.show_share(a)).await,
            Request::ShareResize(a) => Box::pin(self.resize_share(a, slot)).await,
            Request::ShareDelete(a) => Box::pin(self.delete_share(a, slot)).await,
            Request::ShareSetMetadata(a) => object(Box::pin(self.set_share_metadata(a)).await),
            Request::ShareClone(a) => Box::pin(self.clone_share(a, slot)).await,
            Request::ShareRevert(a) => Box::pin(self.revert_share(a)).await,
            Request::SnapshotCreate(a) => Box::pin(self.create_snapshot(a, slot)).await,
            Request::SnapshotList(a) => Box::pin(self.list_snapshots(a)).await,
            Request::SnapshotShow(a) => read(self.show_snapshot(a)),
            Request::SnapshotDelete(a) => deleted(Box::pin(self.delete_snapshot(a, slot)).await),
            Request::Tree(a) => Box::pin(self.tree(a)).await,
            Request::SnapshotCreateGroup(a) => Box::pin(self.create_group(a)).await,
            Request::GroupSnapshotList(a) => read(Box::pin(self.list_groups(a)).await),
            Request::GroupSnapshotShow(a) => read(Box::pin(self.show_group(a)).await),
            Request::GroupSnapshotDelete(a) => deleted(Box::pin(self.delete_group(a)).await),
            Request::ExportCreate(a) => Box::pin(self.create_export(a, slot)).await,
            Request::ExportList(a) => Box::pin(self.list_exports(a)).await,
            Request::ExportShow(a) => Box::pin(self.show_export(a)).await,
            Request::ExportDelete(a) => Box::pin(self.delete_export(a)).await,
            Request::ShareAttach(a) => Box::pin(self.attach_share(a, slot)).await,
            Request::ShareDetach(a) => Box::pin(self.detach_share(a, slot)).await,
            Request::AttachmentList(a) => Box::pin(self.list_attachments(a)).await,
            Request::Reconcile => {
                let report = Box::pin(self.reconcile()).await?;
                let repaired = report.repaired();
                answer(Answer::reconciled(&Outcome::changed_if(repaired, report)))
            }
            Request::Verify => read(Box::pin(self.verify()).await),
            Request::ImageImport(a) => Box::pin(self.import_image(a)).await,
            Request::ImageList(a) => read(Box::pin(self.list_images(a)).await),
            Request::UploadBegin(a) => Box::pin(self.begin_upload(a)).await,
            Request::UploadChunk(a) => Box::pin(self.upload_chunk(a)).await,
            Request::UploadFinish(a) => Box::pin(self.finish_upload(a)).await,
            Request::UploadAbort(a) => deleted(Box::pin(self.abort_upload(a)).await),
            Request::SnapshotExport(a) => Box::pin(self.export_snapshot(a)).await,
            Request::StreamRead(a) => {
                let c = Box::pin(self.streams.read(&a.stream, a.max)).await?;
                Ok(Answer::stream_chunk(c.data, c.end, c.offset))
            }
            Request::StreamClose(a) => deleted(Box::pin(self.streams.close(&a.stream)).await),
            Request::ImageShow(a) => Box::pin(self.show_image(a)).await,
            Request::ImageDelete(a) => deleted(Box::pin(self.delete_image(a)).await),
            Request::JobList => {
                let rows = Box::pin(self.jobs.list(&self.store)).await?;
                read(Ok(rows.iter().map(jobs::job_value).collect::<Vec<_>>()))
            }
            Request::JobShow(a) => read(Ok(jobs::job_value(
                &Box::pin(self.jobs.show(&self.store, &a.job)).await?,
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
            Request::AuditList(a) => Box::pin(self.list_audit(a)).await,
            Request::SnapshotSend(a) => Box::pin(self.send_snapshot(a)).await,
            Request::ReceiveBegin(a) => Box::pin(self.begin_receive(a)).await,
            Request::ReceiveChunk(a) => Box::pin(self.receive_chunk(a)).await,
            Request::ReceiveFinish(a) => Box::pin(self.finish_receive(a)).await,
            Request::ReceiveAbort(a) => deleted(Box::pin(self.abort_receive(a)).await),
        }
    }
}
