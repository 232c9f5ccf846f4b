//! The wire: frames, requests, replies and stable error codes (protocol v1).
//!
//! No business logic lives here: bytes become a typed [`Request`], and a result or an
//! error becomes a reply frame. The full specification is `docs/protocol.md`.

pub mod frame;
mod reply;
mod request;
mod result;
mod strict;

pub use reply::{encode_reply, Body, Reply};
pub use request::{
    envelope_value, parse_request, ArgsError, AttachArgs, AuditListArgs, CloneArgs, Envelope,
    EventsSubscribeArgs, ExportCreateArgs, ExportRef, GroupSnapshotRef, ImageImportArgs, ImageRef,
    JobRef, NoArgs, OpClass, PoolFilter, PoolRef, ReceiveBeginArgs, ReceiveChunkArgs, ReceiveRef,
    Request, ShareCreateArgs, ShareDeleteArgs, ShareFilter, ShareListArgs, ShareRef,
    ShareResizeArgs, ShareRevertArgs, ShareSetMetadataArgs, SnapshotCreateArgs,
    SnapshotCreateGroupArgs, SnapshotExportArgs, SnapshotListArgs, SnapshotRef, SnapshotSendArgs,
    StreamReadArgs, StreamRef, TreeArgs, UploadBeginArgs, UploadChunkArgs, UploadRef, MAX_KEY_LEN,
};
pub use result::{Answer, Change, EncodeError, Hello};

/// Protocol versions this build speaks.
pub const PROTOCOL_VERSIONS: &[u32] = &[1];

/// Features advertised by `hello`; clients test for these instead of comparing versions.
pub const FEATURES: &[&str] = &[
    "pipelining",
    "pool.file",
    "share.metadata",
    "share.clone",
    "tree",
    "export.nfs",
    "export.iscsi",
    "attach",
    "reconcile",
    "verify",
    "roles",
    "audit",
    "idempotency-key",
    "capacity",
    "share.filesystem",
    "image",
    "jobs",
    "events",
    "share.set_metadata",
    "audit.totals",
    "export.nvme",
    "snapshot.send",
    "stream",
    "snapshot.export",
];

/// The stable error codes of protocol v1. A code never changes meaning; new codes may be
/// added, so clients must treat an unknown code like `internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The object does not exist.
    NotFound,
    /// An object with that name exists with other parameters.
    AlreadyExists,
    /// The request is malformed or breaks a rule.
    InvalidArgument,
    /// Snapshots, exports or attachments depend on the object.
    HasDependents,
    /// Not enough space.
    NoSpace,
    /// The object is in use; retrying later may succeed.
    Busy,
    /// Not available on this appliance (missing tool, driver or operation).
    Unsupported,
    /// The peer's role does not allow this.
    PermissionDenied,
    /// A fault inside shelfd or a tool it ran.
    Internal,
    /// A volume or snapshot on disk is not the file shelf made (replaced through a
    /// tenant's NFS export); nothing was done.
    Tampered,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::HasDependents => "has_dependents",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::Busy => "busy",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Internal => "internal",
            ErrorCode::Tampered => "tampered",
        }
    }

    /// Parse a wire code; unknown codes are `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "not_found" => ErrorCode::NotFound,
            "already_exists" => ErrorCode::AlreadyExists,
            "invalid_argument" => ErrorCode::InvalidArgument,
            "has_dependents" => ErrorCode::HasDependents,
            "no_space" => ErrorCode::NoSpace,
            "busy" => ErrorCode::Busy,
            "unsupported" => ErrorCode::Unsupported,
            "permission_denied" => ErrorCode::PermissionDenied,
            "internal" => ErrorCode::Internal,
            "tampered" => ErrorCode::Tampered,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
