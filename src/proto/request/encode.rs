//! The inverse of `parse`: a typed [`Request`] back to its op name and argument map, so
//! clients build requests from the same structs the server parses them into.

use ciborium::Value;
use serde::Serialize;

use super::Request;

/// The argument map of a struct. Encoding these structs into a `Value` cannot fail:
/// every one is a map with text keys of strings, integers, booleans, lists and maps.
fn map_of<T: Serialize>(args: &T) -> Value {
    Value::serialized(args).expect("an argument struct encodes to a CBOR map")
}

impl Request {
    /// The op's name on the wire (`share.create`).
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello => "hello",
            Request::PoolList => "pool.list",
            Request::PoolShow(_) => "pool.show",
            Request::ShareCreate(_) => "share.create",
            Request::ShareList(_) => "share.list",
            Request::ShareShow(_) => "share.show",
            Request::ShareResize(_) => "share.resize",
            Request::ShareDelete(_) => "share.delete",
            Request::ShareSetMetadata(_) => "share.set_metadata",
            Request::ShareClone(_) => "share.clone",
            Request::SnapshotCreate(_) => "snapshot.create",
            Request::SnapshotList(_) => "snapshot.list",
            Request::SnapshotShow(_) => "snapshot.show",
            Request::SnapshotDelete(_) => "snapshot.delete",
            Request::Tree(_) => "tree",
            Request::ExportCreate(_) => "export.create",
            Request::ExportList(_) => "export.list",
            Request::ExportShow(_) => "export.show",
            Request::ExportDelete(_) => "export.delete",
            Request::ShareAttach(_) => "share.attach",
            Request::ShareDetach(_) => "share.detach",
            Request::AttachmentList(_) => "attachment.list",
            Request::Reconcile => "reconcile",
            Request::Verify => "verify",
            Request::AuditList(_) => "audit.list",
            Request::ImageImport(_) => "image.import",
            Request::ImageList(_) => "image.list",
            Request::UploadBegin(_) => "image.upload.begin",
            Request::UploadChunk(_) => "image.upload.chunk",
            Request::UploadFinish(_) => "image.upload.finish",
            Request::UploadAbort(_) => "image.upload.abort",
            Request::StreamRead(_) => "stream.read",
            Request::StreamClose(_) => "stream.close",
            Request::ImageShow(_) => "image.show",
            Request::ImageDelete(_) => "image.delete",
            Request::JobList => "job.list",
            Request::JobShow(_) => "job.show",
            Request::JobCancel(_) => "job.cancel",
            Request::EventsSubscribe(_) => "events.subscribe",
            Request::SnapshotSend(_) => "snapshot.send",
            Request::ReceiveBegin(_) => "snapshot.receive.begin",
            Request::ReceiveChunk(_) => "snapshot.receive.chunk",
            Request::ReceiveFinish(_) => "snapshot.receive.finish",
            Request::ReceiveAbort(_) => "snapshot.receive.abort",
        }
    }

    /// The op's name and its argument map, as a client sends them in `{id, op, args}`:
    /// [`super::parse_request`] of that envelope gives back this request. An operation
    /// without arguments sends an empty map.
    pub fn to_wire(&self) -> (&'static str, Value) {
        let args = match self {
            Request::Hello
            | Request::PoolList
            | Request::Reconcile
            | Request::Verify
            | Request::JobList => Value::Map(Vec::new()),
            Request::PoolShow(a) => map_of(a),
            Request::ShareCreate(a) => map_of(a),
            Request::ShareList(a) => map_of(a),
            Request::ShareShow(a) => map_of(a),
            Request::ShareResize(a) => map_of(a),
            Request::ShareDelete(a) => map_of(a),
            Request::ShareSetMetadata(a) => map_of(a),
            Request::ShareClone(a) => map_of(a),
            Request::SnapshotCreate(a) => map_of(a),
            Request::SnapshotList(a) => map_of(a),
            Request::SnapshotShow(a) | Request::SnapshotDelete(a) => map_of(a),
            Request::Tree(a) => map_of(a),
            Request::ExportCreate(a) => map_of(a),
            Request::ExportList(a) | Request::AttachmentList(a) => map_of(a),
            Request::ExportShow(a) | Request::ExportDelete(a) => map_of(a),
            Request::ShareAttach(a) | Request::ShareDetach(a) => map_of(a),
            Request::AuditList(a) => map_of(a),
            Request::ImageImport(a) => map_of(a),
            Request::ImageList(a) => map_of(a),
            Request::UploadBegin(a) => map_of(a),
            Request::UploadChunk(a) => map_of(a),
            Request::UploadFinish(a) | Request::UploadAbort(a) => map_of(a),
            Request::StreamRead(a) => map_of(a),
            Request::StreamClose(a) => map_of(a),
            Request::ImageShow(a) | Request::ImageDelete(a) => map_of(a),
            Request::JobShow(a) | Request::JobCancel(a) => map_of(a),
            Request::EventsSubscribe(a) => map_of(a),
            Request::SnapshotSend(a) => map_of(a),
            Request::ReceiveBegin(a) => map_of(a),
            Request::ReceiveChunk(a) => map_of(a),
            Request::ReceiveFinish(a) | Request::ReceiveAbort(a) => map_of(a),
        };
        (self.op(), args)
    }
}

/// The envelope `{id, op, args[, key]}` of one request, in the order clients send it.
pub fn envelope_value(id: u64, op: &str, args: Value, key: Option<&str>) -> Value {
    let mut m = vec![
        (Value::Text("id".into()), Value::Integer(id.into())),
        (Value::Text("op".into()), Value::Text(op.into())),
        (Value::Text("args".into()), args),
    ];
    if let Some(k) = key {
        m.push((Value::Text("key".into()), Value::Text(k.into())));
    }
    Value::Map(m)
}
