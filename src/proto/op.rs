//! Each request's operation name, as the wire spells it (the event stream's `op`).

use super::Request;

impl Request {
    /// The operation's wire name (`share.create`), the inverse of
    /// [`super::parse_request`]'s table. Every operation is listed (no wildcard).
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
            Request::UploadBegin(_) => "image.upload.begin",
            Request::UploadChunk(_) => "image.upload.chunk",
            Request::UploadFinish(_) => "image.upload.finish",
            Request::UploadAbort(_) => "image.upload.abort",
            Request::ImageList(_) => "image.list",
            Request::ImageShow(_) => "image.show",
            Request::ImageDelete(_) => "image.delete",
            Request::JobList => "job.list",
            Request::JobShow(_) => "job.show",
            Request::JobCancel(_) => "job.cancel",
            Request::EventsSubscribe(_) => "events.subscribe",
        }
    }
}

#[cfg(test)]
mod tests {
    use ciborium::Value;

    use super::super::parse_request;

    /// Every name parses back to a request that names itself so.
    #[test]
    fn names_round_trip_through_the_parser() {
        for op in ["hello", "pool.list", "reconcile", "verify", "job.list"] {
            let frame = Value::Map(vec![
                (Value::Text("id".into()), Value::Integer(1.into())),
                (Value::Text("op".into()), Value::Text(op.into())),
            ]);
            let env = parse_request(frame).expect(op);
            assert_eq!(env.request.op(), op);
        }
    }
}
