//! One typed argument struct per operation.
//!
//! Argument structs refuse unknown fields, so a misspelt argument is an
//! `invalid_argument` error rather than a silently ignored option.
//!
//! They serialize too, so clients build typed requests ([`super::Request::to_wire`]):
//! an absent option, a `false` flag and an empty map or list are left out, as a
//! hand-written client leaves them out. The order of the fields is the order of the keys
//! on the wire (shelfctl's, so its requests encode to the same bytes as before).

use std::collections::BTreeMap;

use ciborium::Value;
use serde::{Deserialize, Serialize};

use crate::model::{Access, Connector, Driver, FsKind, Layout, Protocol};

/// No arguments (an empty map, or none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `pool.show`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRef {
    /// The pool's name.
    pub name: String,
}

/// `share.create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareCreateArgs {
    /// The new share's name.
    pub name: String,
    /// `xfs` or `ext4`, for a `filesystem` share (implies it); default from the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FsKind>,
    /// Make the share from this cached image (id or name): a reflink of the raw base,
    /// grown to `size` (which must be at least the image's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// Size in bytes (a multiple of 512).
    pub size: u64,
    /// Pool; the only pool, or `default`, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Thin (default) or preallocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<bool>,
    /// Allow several hosts to attach it at once (default: single-attach).
    #[serde(default, skip_serializing_if = "is_false")]
    pub multiattach: bool,
    /// Text → text metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `block` (default) or `filesystem` (formatted and mounted by shelfd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

/// `image.import`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageImportArgs {
    /// The image's name, unique within the pool.
    pub name: String,
    /// An absolute path on the appliance to read the image from.
    pub source: String,
    /// `raw`, `qcow2`, `vmdk`, `vdi`, `vhdx`, `vpc`, `qed`; detected from the bytes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `md5:<hex>`, `sha256:<hex>`, or a bare digest (32 hex digits: md5, as Glance gives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The pool to cache it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `image.upload.begin`: an import whose bytes come over the socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadBeginArgs {
    /// The image's name.
    pub name: String,
    /// The number of bytes that will be sent.
    pub size: u64,
    /// The format (detected when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Checksum to verify (as for `image.import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `image.upload.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRef {
    /// The upload's id.
    pub upload: String,
}

/// `stream.read`: the next bytes of a byte stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamReadArgs {
    /// The stream's id (from `snapshot.export`, `snapshot.send`).
    pub stream: String,
    /// At most this many bytes (at least 1; the server also caps it so that its reply
    /// fits in `max_frame_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// `stream.close`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRef {
    /// The stream's id.
    pub stream: String,
}

/// A reference to one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// Id or name.
    pub image: String,
    /// Pool, when the name is in several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// A pool filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFilter {
    /// Only this pool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// A reference to one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    /// The job's id.
    pub job: String,
}

/// `events.subscribe`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSubscribeArgs {
    /// Resume after this sequence number (the last one seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The epoch `since` belongs to (from the subscribe reply or any event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `share.list` filters; all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareListArgs {
    /// Only shares of this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Only the share with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only the share with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A reference to one share: its id, or its name (with the pool when names repeat).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRef {
    /// Id or name.
    pub share: String,
    /// Pool, to tell apart shares of the same name in different pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `share.resize`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareResizeArgs {
    /// Id or name.
    pub share: String,
    /// The new size in bytes; must not be smaller than the current size.
    pub size: u64,
    /// Pool, when the name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `share.set_metadata`: change some metadata entries of an existing share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareSetMetadataArgs {
    /// Id or name.
    pub share: String,
    /// Pool, when the name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Entries to add or overwrite; the others are kept. Always sent, even empty.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Keys to remove (absent keys are ignored); applied before `metadata`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// `share.delete`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareDeleteArgs {
    /// Id or name.
    pub share: String,
    /// Pool, when the name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Delete the share's snapshots too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recursive: bool,
    /// Remove the share's exports and attachments first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// `snapshot.create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateArgs {
    /// The share: id or name.
    pub share: String,
    /// The snapshot's name, unique within the share.
    pub name: String,
    /// Pool, when the share's name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `snapshot.list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotListArgs {
    /// Only this share's snapshots (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Only this pool's snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `tree`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeArgs {
    /// Only this pool's lineage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// A reference to one snapshot: its id, or its name together with its share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRef {
    /// Id, or name when `share` is given.
    pub snapshot: String,
    /// The share (id or name) the named snapshot belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `share.clone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneArgs {
    /// The snapshot: id, or name together with `share`.
    pub snapshot: String,
    /// The new share's name (in the snapshot's pool).
    pub name: String,
    /// The snapshot's share, when the snapshot is given by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Metadata of the new share.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `export.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCreateArgs {
    /// The share: id or name.
    pub share: String,
    /// `nfs` or `iscsi`.
    pub protocol: Protocol,
    /// Driver (default from the config: `kernel` for NFS, `tgt` for iSCSI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// NFS: clients allowed to mount (required; `[]` means attached hosts only).
    /// iSCSI: initiator IQNs allowed besides attached ones (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<String>>,
    /// NFS: `rw` (default) or `ro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// NFS: `sync` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<bool>,
    /// NFS: `root_squash` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_squash: Option<bool>,
    /// iSCSI: require CHAP (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<bool>,
}

/// A reference to one export: its id, or its share and protocol.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRef {
    /// Export id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// The share (id or name), with `protocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The protocol, with `share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// `export.delete`: also drop the share's attachments for this protocol.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// `export.list`, `attachment.list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareFilter {
    /// Only this share's (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `share.attach` and `share.detach`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachArgs {
    /// The share: id or name.
    pub share: String,
    /// Pool, when the share's name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The host attaching: `{ip, initiator, host}`.
    pub connector: Connector,
    /// `iscsi` or `nfs` (default: the share's existing export, iSCSI first; else iSCSI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// `rw` (default) or `ro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Access>,
}

/// `audit.list`: the newest entries first, or those after `since` oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditListArgs {
    /// Only entries with a sequence number above this, oldest first (to follow the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// At most this many entries (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only entries of this op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// Only entries of this peer uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Answer `{entries, totals}` instead of the bare array: `totals` says, per kind of
    /// entry, how many requests were recorded, aggregated and dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<bool>,
}

/// `skip_serializing_if` for flags that default to `false`.
fn is_false(b: &bool) -> bool {
    !*b
}

/// `snapshot.send`: a stream of the snapshot (docs/replication.md), incremental from
/// `from` when given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSendArgs {
    /// The snapshot: its id, or its name when `share` is given.
    pub snapshot: String,
    /// The base snapshot (id, or name of a snapshot of the same share): the stream then
    /// carries only what changed since it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The share (id or name) a named snapshot belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Pool, when the share's name is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `snapshot.receive.begin`: start receiving a stream into the share `name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveBeginArgs {
    /// The share on this node that holds the received snapshots (made by the first
    /// full receive).
    pub name: String,
    /// The pool (the only one when absent and there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `snapshot.receive.chunk`: the next bytes of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveChunkArgs {
    /// The receive's id.
    pub receive: String,
    /// Where the bytes are in the stream: the number of bytes received so far (a repeat
    /// of the last chunk is accepted and ignored).
    pub offset: u64,
    /// The bytes (a CBOR byte string).
    pub data: Value,
}

/// `snapshot.receive.finish` / `snapshot.receive.abort`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRef {
    /// The receive's id.
    pub receive: String,
}
