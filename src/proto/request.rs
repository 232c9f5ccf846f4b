//! Requests: the envelope `{id, op, args}` and one typed argument struct per operation.
//!
//! Parsing touches no state. Argument structs refuse unknown fields, so a misspelt
//! argument is an `invalid_argument` error rather than a silently ignored option.

use std::collections::BTreeMap;

use ciborium::Value;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::model::{Access, Connector, Driver, FsKind, Layout, Protocol};

/// A request that could not be parsed: the id when it could be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ArgsError {
    /// The request's id, if the envelope got that far.
    pub id: Option<u64>,
    /// `true` when the op is unknown (answered `unsupported`), else `invalid_argument`.
    pub unknown_op: bool,
    /// What is wrong.
    pub message: String,
}

/// A parsed request: the client's id, the op's name and the typed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The client's id, echoed in the reply.
    pub id: u64,
    /// The op name as sent (for logs).
    pub op: String,
    /// The typed operation.
    pub request: Request,
    /// The client's idempotency key, if it sent one: a retry with the same key is answered
    /// with the first answer instead of doing the work twice.
    pub key: Option<String>,
    /// SHA-256 of the op and its encoded arguments (computed only when `key` is set), so a
    /// key reused for a different request is caught.
    pub digest: Option<String>,
}

/// The longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 128;

/// No arguments (an empty map, or none).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `pool.show`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRef {
    /// The pool's name.
    pub name: String,
}

/// `share.create`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareCreateArgs {
    /// The new share's name.
    pub name: String,
    /// Size in bytes (a multiple of 512).
    pub size: u64,
    /// Pool; the only pool, or `default`, when absent.
    #[serde(default)]
    pub pool: Option<String>,
    /// Thin (default) or preallocated.
    #[serde(default)]
    pub sparse: Option<bool>,
    /// Allow several hosts to attach it at once (default: single-attach).
    #[serde(default)]
    pub multiattach: bool,
    /// Text → text metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `block` (default) or `filesystem` (formatted and mounted by shelfd).
    #[serde(default)]
    pub layout: Option<Layout>,
    /// `xfs` or `ext4`, for a `filesystem` share (implies it); default from the config.
    #[serde(default)]
    pub filesystem: Option<FsKind>,
    /// Make the share from this cached image (id or name): a reflink of the raw base,
    /// grown to `size` (which must be at least the image's size).
    #[serde(default)]
    pub from_image: Option<String>,
}

/// `image.import`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageImportArgs {
    /// The image's name, unique within the pool.
    pub name: String,
    /// An absolute path on the appliance to read the image from.
    pub source: String,
    /// `raw`, `qcow2`, `vmdk`, `vdi`, `vhdx`, `vpc`, `qed`; detected from the bytes when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// `md5:<hex>`, `sha256:<hex>`, or a bare digest (32 hex digits: md5, as Glance gives).
    #[serde(default)]
    pub checksum: Option<String>,
    /// The pool to cache it in.
    #[serde(default)]
    pub pool: Option<String>,
}

/// `image.upload.begin`: an import whose bytes come over the socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadBeginArgs {
    /// The image's name.
    pub name: String,
    /// The number of bytes that will be sent.
    pub size: u64,
    /// The format (detected when absent).
    #[serde(default)]
    pub format: Option<String>,
    /// Checksum to verify (as for `image.import`).
    #[serde(default)]
    pub checksum: Option<String>,
    /// The pool.
    #[serde(default)]
    pub pool: Option<String>,
}

/// `image.upload.chunk`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadChunkArgs {
    /// The upload's id.
    pub upload: String,
    /// Where the bytes go.
    pub offset: u64,
    /// The bytes (a CBOR byte string).
    pub data: Value,
}

/// `image.upload.finish` / `image.upload.abort`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRef {
    /// The upload's id.
    pub upload: String,
}

/// A reference to one image.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// Id or name.
    pub image: String,
    /// Pool, when the name is in several.
    #[serde(default)]
    pub pool: Option<String>,
}

/// A pool filter.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFilter {
    /// Only this pool's.
    #[serde(default)]
    pub pool: Option<String>,
}

/// A reference to one job.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    /// The job's id.
    pub job: String,
}

/// `events.subscribe`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSubscribeArgs {
    /// Resume after this sequence number (the last one seen).
    #[serde(default)]
    pub since: Option<u64>,
    /// The epoch `since` belongs to (from the subscribe reply or any event).
    #[serde(default)]
    pub epoch: Option<String>,
}

/// `share.list` filters; all optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareListArgs {
    /// Only shares of this pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// Only the share with this name.
    #[serde(default)]
    pub name: Option<String>,
    /// Only the share with this id.
    #[serde(default)]
    pub id: Option<String>,
}

/// A reference to one share: its id, or its name (with the pool when names repeat).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRef {
    /// Id or name.
    pub share: String,
    /// Pool, to tell apart shares of the same name in different pools.
    #[serde(default)]
    pub pool: Option<String>,
}

/// `share.resize`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareResizeArgs {
    /// Id or name.
    pub share: String,
    /// Pool, when the name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
    /// The new size in bytes; must not be smaller than the current size.
    pub size: u64,
}

/// `share.set_metadata`: change some metadata entries of an existing share.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareSetMetadataArgs {
    /// Id or name.
    pub share: String,
    /// Pool, when the name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
    /// Entries to add or overwrite; the others are kept.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Keys to remove (absent keys are ignored); applied before `metadata`.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `share.delete`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareDeleteArgs {
    /// Id or name.
    pub share: String,
    /// Pool, when the name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
    /// Delete the share's snapshots too.
    #[serde(default)]
    pub recursive: bool,
    /// Remove the share's exports and attachments first.
    #[serde(default)]
    pub force: bool,
}

/// `snapshot.create`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateArgs {
    /// The share: id or name.
    pub share: String,
    /// Pool, when the share's name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
    /// The snapshot's name, unique within the share.
    pub name: String,
}

/// `snapshot.list`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotListArgs {
    /// Only this share's snapshots (id or name).
    #[serde(default)]
    pub share: Option<String>,
    /// Only this pool's snapshots.
    #[serde(default)]
    pub pool: Option<String>,
}

/// `tree`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeArgs {
    /// Only this pool's lineage.
    #[serde(default)]
    pub pool: Option<String>,
}

/// A reference to one snapshot: its id, or its name together with its share.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRef {
    /// Id, or name when `share` is given.
    pub snapshot: String,
    /// The share (id or name) the named snapshot belongs to.
    #[serde(default)]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
}

/// `share.clone`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneArgs {
    /// The snapshot: id, or name together with `share`.
    pub snapshot: String,
    /// The snapshot's share, when the snapshot is given by name.
    #[serde(default)]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
    /// The new share's name (in the snapshot's pool).
    pub name: String,
    /// Metadata of the new share.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `export.create`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCreateArgs {
    /// The share: id or name.
    pub share: String,
    /// Pool, when the share's name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
    /// `nfs` or `iscsi`.
    pub protocol: Protocol,
    /// Driver (default from the config: `kernel` for NFS, `tgt` for iSCSI).
    #[serde(default)]
    pub driver: Option<Driver>,
    /// NFS: clients allowed to mount (required; `[]` means attached hosts only).
    /// iSCSI: initiator IQNs allowed besides attached ones (default none).
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    /// NFS: `rw` (default) or `ro`.
    #[serde(default)]
    pub access: Option<Access>,
    /// NFS: `sync` (default true).
    #[serde(default)]
    pub sync: Option<bool>,
    /// NFS: `root_squash` (default true).
    #[serde(default)]
    pub root_squash: Option<bool>,
    /// iSCSI: require CHAP (default true).
    #[serde(default)]
    pub chap: Option<bool>,
}

/// A reference to one export: its id, or its share and protocol.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRef {
    /// Export id.
    #[serde(default)]
    pub export: Option<String>,
    /// The share (id or name), with `protocol`.
    #[serde(default)]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
    /// The protocol, with `share`.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// `export.delete`: also drop the share's attachments for this protocol.
    #[serde(default)]
    pub force: bool,
}

/// `export.list`, `attachment.list`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareFilter {
    /// Only this share's (id or name).
    #[serde(default)]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
}

/// `share.attach` and `share.detach`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachArgs {
    /// The share: id or name.
    pub share: String,
    /// Pool, when the share's name is ambiguous.
    #[serde(default)]
    pub pool: Option<String>,
    /// The host attaching: `{ip, initiator, host}`.
    pub connector: Connector,
    /// `iscsi` or `nfs` (default: the share's existing export, iSCSI first; else iSCSI).
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// `rw` (default) or `ro`.
    #[serde(default)]
    pub mode: Option<Access>,
}

/// `audit.list`: the newest entries first, or those after `since` oldest first.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditListArgs {
    /// Only entries with a sequence number above this, oldest first (to follow the log).
    #[serde(default)]
    pub since: Option<u64>,
    /// At most this many entries (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only entries of this op.
    #[serde(default)]
    pub op: Option<String>,
    /// Only entries of this peer uid.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Answer `{entries, totals}` instead of the bare array: `totals` says, per kind of
    /// entry, how many requests were recorded, aggregated and dropped.
    #[serde(default)]
    pub totals: Option<bool>,
}

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
            | Request::UploadChunk(_) => AdminOnly,
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
            | Request::ImageDelete(_)
            | Request::JobCancel(_) => Change,
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
            _ => String::new(),
        };
        t.chars().take(200).collect()
    }
}

fn args<T: DeserializeOwned>(op: &str, v: &Value) -> Result<T, String> {
    v.deserialized::<T>().map_err(|e| {
        let ciborium::value::Error::Custom(msg) = e;
        let msg: String = msg.chars().take(300).collect();
        format!("{op}: bad arguments: {msg}")
    })
}

/// Parse a decoded frame into an [`Envelope`].
pub fn parse_request(v: Value) -> Result<Envelope, ArgsError> {
    let fail = |id: Option<u64>, message: String| ArgsError {
        id,
        unknown_op: false,
        message,
    };
    let Value::Map(entries) = v else {
        return Err(fail(
            None,
            "a request must be a CBOR map {id, op, args}".into(),
        ));
    };
    if let Err(message) = super::strict::check_request(&entries) {
        return Err(fail(super::strict::unambiguous_id(&entries), message));
    }
    let mut id = None;
    let mut op = None;
    let mut key = None;
    let mut arg_value = Value::Map(Vec::new());
    let mut bad_field = None;
    for (k, val) in entries {
        match (k.as_text(), val) {
            (Some("id"), Value::Integer(i)) => id = u64::try_from(i).ok(),
            (Some("op"), Value::Text(t)) => op = Some(t),
            (Some("args"), m @ Value::Map(_)) => arg_value = m,
            (Some("args"), Value::Null) => {}
            (Some("key"), Value::Text(t)) => key = Some(t),
            (Some(name @ ("id" | "op" | "args" | "key")), _) => {
                bad_field = Some(format!("field {name:?} has the wrong type"))
            }
            (Some(other), _) => {
                bad_field = Some(format!("unknown request field {:?}", truncate(other)))
            }
            (None, _) => bad_field = Some("request keys must be text".into()),
        }
    }
    let Some(id) = id else {
        return Err(fail(
            None,
            "request needs an unsigned integer \"id\"".into(),
        ));
    };
    if let Some(msg) = bad_field {
        return Err(fail(Some(id), msg));
    }
    let Some(op) = op else {
        return Err(fail(Some(id), "request needs a text \"op\"".into()));
    };
    if let Some(k) = &key {
        if k.is_empty() || k.len() > MAX_KEY_LEN || !k.chars().all(|c| c.is_ascii_graphic()) {
            return Err(fail(
                Some(id),
                format!("key must be 1 to {MAX_KEY_LEN} printable ASCII characters without spaces"),
            ));
        }
    }
    let digest = key.as_ref().map(|_| request_digest(&op, &arg_value));
    let a = &arg_value;
    let request = match op.as_str() {
        "hello" => args::<NoArgs>(&op, a).map(|_| Request::Hello),
        "pool.list" => args::<NoArgs>(&op, a).map(|_| Request::PoolList),
        "pool.show" => args(&op, a).map(Request::PoolShow),
        "share.create" => args(&op, a).map(Request::ShareCreate),
        "share.list" => args(&op, a).map(Request::ShareList),
        "share.show" => args(&op, a).map(Request::ShareShow),
        "share.resize" => args(&op, a).map(Request::ShareResize),
        "share.delete" => args(&op, a).map(Request::ShareDelete),
        "share.set_metadata" => args(&op, a).map(Request::ShareSetMetadata),
        "share.clone" => args(&op, a).map(Request::ShareClone),
        "snapshot.create" => args(&op, a).map(Request::SnapshotCreate),
        "snapshot.list" => args(&op, a).map(Request::SnapshotList),
        "snapshot.show" => args(&op, a).map(Request::SnapshotShow),
        "snapshot.delete" => args(&op, a).map(Request::SnapshotDelete),
        "tree" => args(&op, a).map(Request::Tree),
        "export.create" => args(&op, a).map(Request::ExportCreate),
        "export.list" => args(&op, a).map(Request::ExportList),
        "export.show" => args(&op, a).map(Request::ExportShow),
        "export.delete" => args(&op, a).map(Request::ExportDelete),
        "share.attach" => args(&op, a).map(Request::ShareAttach),
        "share.detach" => args(&op, a).map(Request::ShareDetach),
        "attachment.list" => args(&op, a).map(Request::AttachmentList),
        "reconcile" => args::<NoArgs>(&op, a).map(|_| Request::Reconcile),
        "verify" => args::<NoArgs>(&op, a).map(|_| Request::Verify),
        "audit.list" => args(&op, a).map(Request::AuditList),
        "image.import" => args(&op, a).map(Request::ImageImport),
        "image.list" => args(&op, a).map(Request::ImageList),
        "image.upload.begin" => args(&op, a).map(Request::UploadBegin),
        "image.upload.chunk" => args(&op, a).map(Request::UploadChunk),
        "image.upload.finish" => args(&op, a).map(Request::UploadFinish),
        "image.upload.abort" => args(&op, a).map(Request::UploadAbort),
        "image.show" => args(&op, a).map(Request::ImageShow),
        "image.delete" => args(&op, a).map(Request::ImageDelete),
        "job.list" => args::<NoArgs>(&op, a).map(|_| Request::JobList),
        "job.show" => args(&op, a).map(Request::JobShow),
        "job.cancel" => args(&op, a).map(Request::JobCancel),
        "events.subscribe" => args(&op, a).map(Request::EventsSubscribe),
        _ => {
            return Err(ArgsError {
                id: Some(id),
                unknown_op: true,
                message: format!("unknown op {:?}", truncate(&op)),
            })
        }
    }
    .map_err(|m| fail(Some(id), m))?;
    Ok(Envelope {
        id,
        op,
        request,
        key,
        digest,
    })
}

/// SHA-256 (hex) of an op and its arguments as encoded.
fn request_digest(op: &str, args: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut bytes = Vec::new();
    // Encoding a decoded value cannot fail for lack of space in a Vec.
    let _ = ciborium::into_writer(args, &mut bytes);
    let mut h = Sha256::new();
    h.update(op.as_bytes());
    h.update([0u8]);
    h.update(&bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: i64, op: &str, args: Vec<(&str, Value)>) -> Value {
        Value::Map(vec![
            (Value::Text("id".into()), Value::Integer(id.into())),
            (Value::Text("op".into()), Value::Text(op.into())),
            (
                Value::Text("args".into()),
                Value::Map(
                    args.into_iter()
                        .map(|(k, v)| (Value::Text(k.into()), v))
                        .collect(),
                ),
            ),
        ])
    }

    #[test]
    fn parses_share_create() {
        let e = parse_request(req(
            3,
            "share.create",
            vec![
                ("name", Value::Text("v1".into())),
                ("size", Value::Integer(4096.into())),
            ],
        ))
        .unwrap();
        assert_eq!(e.id, 3);
        let Request::ShareCreate(a) = e.request else {
            panic!()
        };
        assert_eq!((a.name.as_str(), a.size, a.pool), ("v1", 4096, None));
    }

    #[test]
    fn refuses_bad_envelopes_and_args() {
        let cases = vec![
            (Value::Integer(1.into()), None),
            (req(-1, "hello", vec![]), None),
            (
                req(1, "share.create", vec![("name", Value::Text("x".into()))]),
                Some(1),
            ),
            (
                req(
                    2,
                    "share.create",
                    vec![
                        ("name", Value::Text("x".into())),
                        ("size", Value::Integer((-5).into())),
                    ],
                ),
                Some(2),
            ),
            (req(4, "hello", vec![("junk", Value::Null)]), Some(4)),
            (
                req(
                    5,
                    "share.create",
                    vec![
                        ("name", Value::Integer(1.into())),
                        ("size", Value::Integer(1.into())),
                    ],
                ),
                Some(5),
            ),
        ];
        for (v, id) in cases {
            let e = parse_request(v.clone()).unwrap_err();
            assert_eq!(e.id, id, "{v:?}: {e}");
            assert!(!e.unknown_op);
        }
    }

    #[test]
    fn keys_are_checked_and_digested() {
        let with_key = |k: Value, size: i64| {
            let mut v = req(
                1,
                "share.create",
                vec![
                    ("name", Value::Text("v".into())),
                    ("size", Value::Integer(size.into())),
                ],
            );
            if let Value::Map(m) = &mut v {
                m.push((Value::Text("key".into()), k));
            }
            v
        };
        let a = parse_request(with_key(Value::Text("k-1".into()), 4096)).unwrap();
        let b = parse_request(with_key(Value::Text("k-1".into()), 4096)).unwrap();
        let c = parse_request(with_key(Value::Text("k-1".into()), 8192)).unwrap();
        assert_eq!(a.key.as_deref(), Some("k-1"));
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
        for bad in [
            Value::Text(String::new()),
            Value::Text("a b".into()),
            Value::Text("x".repeat(MAX_KEY_LEN + 1)),
            Value::Integer(5.into()),
        ] {
            assert!(parse_request(with_key(bad, 4096)).is_err());
        }
        assert_eq!(parse_request(req(2, "hello", vec![])).unwrap().digest, None);
    }

    #[test]
    fn unknown_op_is_flagged() {
        let e = parse_request(req(9, "share.explode", vec![])).unwrap_err();
        assert!(e.unknown_op && e.id == Some(9));
    }

    #[test]
    fn missing_args_means_empty() {
        let v = Value::Map(vec![
            (Value::Text("id".into()), Value::Integer(1.into())),
            (Value::Text("op".into()), Value::Text("pool.list".into())),
        ]);
        assert_eq!(parse_request(v).unwrap().request, Request::PoolList);
    }
}
