//! Requests: every operation of protocol v1 as a typed [`Request`], and who may run it.
//!
//! The argument structs are in `args`, the envelope `{id, op, args}` and its parsing in
//! `parse`, the way back (a typed request to its op and arguments, for clients) in
//! `encode`. Parsing touches no state.

mod args;
mod encode;
mod parse;
#[cfg(test)]
mod round_trip;

pub use args::*;
pub use encode::envelope_value;
pub use parse::{parse_request, ArgsError, Envelope, MAX_KEY_LEN};

/// Who may run an operation (see [`Request::class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// Readers and admins; not audited.
    Read,
    /// Admins only; changes nothing durable (or only its own upload), not audited.
    AdminOnly,
    /// Admins only; changes state, and every request is audited.
    Change,
}

/// Every operation of protocol v1, with its typed arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `hello`: server name, version, protocol versions, features.
    Hello,
    /// `pool.list`.
    PoolList,
    /// `pool.show`.
    PoolShow(PoolRef),
    /// `share.create`.
    ShareCreate(ShareCreateArgs),
    /// `share.list`.
    ShareList(ShareListArgs),
    /// `share.show`.
    ShareShow(ShareRef),
    /// `share.resize` (grow only).
    ShareResize(ShareResizeArgs),
    /// `share.delete`.
    ShareDelete(ShareDeleteArgs),
    /// `share.set_metadata`: change metadata entries and restamp the volume's identity.
    ShareSetMetadata(ShareSetMetadataArgs),
    /// `share.clone`: a new share from a snapshot.
    ShareClone(CloneArgs),
    /// `snapshot.create`.
    SnapshotCreate(SnapshotCreateArgs),
    /// `snapshot.list`.
    SnapshotList(SnapshotListArgs),
    /// `snapshot.show`.
    SnapshotShow(SnapshotRef),
    /// `snapshot.delete`.
    SnapshotDelete(SnapshotRef),
    /// `tree`: the share → snapshot → clone lineage.
    Tree(TreeArgs),
    /// `export.create`.
    ExportCreate(ExportCreateArgs),
    /// `export.list`.
    ExportList(ShareFilter),
    /// `export.show`.
    ExportShow(ExportRef),
    /// `export.delete`.
    ExportDelete(ExportRef),
    /// `share.attach`: the attach contract (returns `connection_info`).
    ShareAttach(AttachArgs),
    /// `share.detach`.
    ShareDetach(AttachArgs),
    /// `attachment.list`.
    AttachmentList(ShareFilter),
    /// `reconcile`: compare the tree with the target daemons and repair.
    Reconcile,
    /// `verify`: compare database, pools and exports and list every difference; repairs
    /// nothing.
    Verify,
    /// `audit.list`: the audit log of state-changing and refused requests.
    AuditList(AuditListArgs),
    /// `image.import`: cache an image (a job).
    ImageImport(ImageImportArgs),
    /// `image.upload.begin`.
    UploadBegin(UploadBeginArgs),
    /// `image.upload.chunk`.
    UploadChunk(UploadChunkArgs),
    /// `image.upload.finish`: starts the import job.
    UploadFinish(UploadRef),
    /// `image.upload.abort`.
    UploadAbort(UploadRef),
    /// `image.list`.
    ImageList(PoolFilter),
    /// `stream.read`: the next bytes of a byte stream.
    StreamRead(StreamReadArgs),
    /// `stream.close`: end a byte stream before its end.
    StreamClose(StreamRef),
    /// `image.show`.
    ImageShow(ImageRef),
    /// `image.delete`.
    ImageDelete(ImageRef),
    /// `job.list`.
    JobList,
    /// `job.show`.
    JobShow(JobRef),
    /// `job.cancel`.
    JobCancel(JobRef),
    /// `events.subscribe`: this connection receives event frames from now on.
    EventsSubscribe(EventsSubscribeArgs),
    /// `snapshot.send`: a byte stream of the snapshot, read with `stream.read`.
    SnapshotSend(SnapshotSendArgs),
    /// `snapshot.receive.begin`.
    ReceiveBegin(ReceiveBeginArgs),
    /// `snapshot.receive.chunk`.
    ReceiveChunk(ReceiveChunkArgs),
    /// `snapshot.receive.finish`: verify and commit the received snapshot.
    ReceiveFinish(ReceiveRef),
    /// `snapshot.receive.abort`.
    ReceiveAbort(ReceiveRef),
}

impl Request {
    /// Who may run the operation and whether it is audited. Every operation is listed
    /// (no wildcard), so a new one cannot be added without being classified; the reader's
    /// list is docs/protocol.md §2.1.
    pub fn class(&self) -> OpClass {
        use OpClass::{AdminOnly, Change, Read};
        match self {
            Request::Hello
            | Request::PoolList
            | Request::PoolShow(_)
            | Request::ShareList(_)
            | Request::ShareShow(_)
            | Request::SnapshotList(_)
            | Request::SnapshotShow(_)
            | Request::Tree(_)
            | Request::ExportList(_)
            | Request::ExportShow(_)
            | Request::AttachmentList(_) => Read,
            Request::Verify
            | Request::AuditList(_)
            | Request::ImageList(_)
            | Request::ImageShow(_)
            | Request::JobList
            | Request::JobShow(_)
            | Request::EventsSubscribe(_)
            // A chunk changes only its own unfinished upload (audited at begin and finish).
            | Request::UploadChunk(_)
            // Likewise for a receive's chunk.
            | Request::ReceiveChunk(_)
            // Data egress: admins only; a read moves only its own stream on (the op
            // that opened the stream is audited).
            | Request::StreamRead(_) => AdminOnly,
            Request::ShareCreate(_)
            | Request::ShareResize(_)
            | Request::ShareDelete(_)
            | Request::ShareSetMetadata(_)
            | Request::ShareClone(_)
            | Request::SnapshotCreate(_)
            | Request::SnapshotDelete(_)
            | Request::ExportCreate(_)
            | Request::ExportDelete(_)
            | Request::ShareAttach(_)
            | Request::ShareDetach(_)
            | Request::Reconcile
            | Request::ImageImport(_)
            | Request::UploadBegin(_)
            | Request::UploadFinish(_)
            | Request::UploadAbort(_)
            | Request::StreamClose(_)
            | Request::ImageDelete(_)
            | Request::JobCancel(_)
            // Data egress: admin only, and audited.
            | Request::SnapshotSend(_)
            | Request::ReceiveBegin(_)
            | Request::ReceiveFinish(_)
            | Request::ReceiveAbort(_) => Change,
        }
    }

    /// Whether the operation changes durable state (used for roles and the audit log).
    pub fn is_mutation(&self) -> bool {
        self.class() == OpClass::Change
    }

    /// Whether a `reader` may run it: exactly the list of docs/protocol.md §2.1 (hello,
    /// list, show and tree of pools, shares, snapshots, exports and attachments); nothing
    /// that changes state, reveals the audit log, or touches images, jobs or events.
    pub fn is_read_only(&self) -> bool {
        self.class() == OpClass::Read
    }

    /// The object a request is about, as the audit log names it (empty when none).
    pub fn target(&self) -> String {
        let with_pool = |name: &str, pool: &Option<String>| match pool {
            Some(p) => format!("{p}/{name}"),
            None => name.to_string(),
        };
        let t = match self {
            Request::PoolShow(a) => a.name.clone(),
            Request::ImageImport(a) => with_pool(&a.name, &a.pool),
            Request::UploadBegin(a) => with_pool(&a.name, &a.pool),
            Request::UploadFinish(a) | Request::UploadAbort(a) => a.upload.clone(),
            Request::ImageShow(a) | Request::ImageDelete(a) => with_pool(&a.image, &a.pool),
            Request::JobShow(a) | Request::JobCancel(a) => a.job.clone(),
            Request::SnapshotSend(a) => {
                let snap = match &a.share {
                    Some(sh) => format!("{}@{}", with_pool(sh, &a.pool), a.snapshot),
                    None => a.snapshot.clone(),
                };
                match &a.from {
                    Some(f) => format!("{snap} from {f}"),
                    None => snap,
                }
            }
            Request::ReceiveBegin(a) => with_pool(&a.name, &a.pool),
            Request::ReceiveFinish(a) | Request::ReceiveAbort(a) => a.receive.clone(),
            Request::StreamClose(a) => a.stream.clone(),
            Request::ShareCreate(a) => with_pool(&a.name, &a.pool),
            Request::ShareShow(a) => with_pool(&a.share, &a.pool),
            Request::ShareResize(a) => with_pool(&a.share, &a.pool),
            Request::ShareDelete(a) => with_pool(&a.share, &a.pool),
            Request::ShareSetMetadata(a) => with_pool(&a.share, &a.pool),
            Request::ShareClone(a) => format!(
                "{} from {}",
                with_pool(&a.name, &a.pool),
                match &a.share {
                    Some(sh) => format!("{sh}@{}", a.snapshot),
                    None => a.snapshot.clone(),
                }
            ),
            Request::SnapshotCreate(a) => format!("{}@{}", with_pool(&a.share, &a.pool), a.name),
            Request::SnapshotShow(a) | Request::SnapshotDelete(a) => match &a.share {
                Some(sh) => format!("{}@{}", with_pool(sh, &a.pool), a.snapshot),
                None => a.snapshot.clone(),
            },
            Request::ExportCreate(a) => {
                format!("{} {}", with_pool(&a.share, &a.pool), a.protocol.as_str())
            }
            Request::ExportShow(a) | Request::ExportDelete(a) => match (&a.export, &a.share) {
                (Some(e), _) => e.clone(),
                (None, Some(sh)) => format!(
                    "{} {}",
                    with_pool(sh, &a.pool),
                    a.protocol.map(|p| p.as_str()).unwrap_or("")
                ),
                (None, None) => String::new(),
            },
            Request::ShareAttach(a) | Request::ShareDetach(a) => {
                format!("{} for {}", with_pool(&a.share, &a.pool), a.connector.host)
            }
            Request::Hello
            | Request::PoolList
            | Request::ShareList(_)
            | Request::SnapshotList(_)
            | Request::Tree(_)
            | Request::ExportList(_)
            | Request::AttachmentList(_)
            | Request::Reconcile
            | Request::Verify
            | Request::AuditList(_)
            | Request::UploadChunk(_)
            | Request::ReceiveChunk(_)
            | Request::StreamRead(_)
            | Request::ImageList(_)
            | Request::JobList
            | Request::EventsSubscribe(_) => String::new(),
        };
        t.chars().take(200).collect()
    }
}
