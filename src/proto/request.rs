//! Requests: the envelope `{id, op, args}` and one typed argument struct per operation.
//!
//! Parsing touches no state. Argument structs refuse unknown fields, so a misspelt
//! argument is an `invalid_argument` error rather than a silently ignored option.

use std::collections::BTreeMap;

use ciborium::Value;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::model::{Access, Connector, Driver, Protocol};

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
}

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
}

impl Request {
    /// Whether the operation changes durable state (used for roles and the audit log).
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            Request::ShareCreate(_)
                | Request::ShareResize(_)
                | Request::ShareDelete(_)
                | Request::ShareClone(_)
                | Request::SnapshotCreate(_)
                | Request::SnapshotDelete(_)
                | Request::ExportCreate(_)
                | Request::ExportDelete(_)
                | Request::ShareAttach(_)
                | Request::ShareDetach(_)
                | Request::Reconcile
        )
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
    let mut arg_value = Value::Map(Vec::new());
    let mut bad_field = None;
    for (k, val) in entries {
        match (k.as_text(), val) {
            (Some("id"), Value::Integer(i)) => id = u64::try_from(i).ok(),
            (Some("op"), Value::Text(t)) => op = Some(t),
            (Some("args"), m @ Value::Map(_)) => arg_value = m,
            (Some("args"), Value::Null) => {}
            (Some(name @ ("id" | "op" | "args")), _) => {
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
        _ => {
            return Err(ArgsError {
                id: Some(id),
                unknown_op: true,
                message: format!("unknown op {:?}", truncate(&op)),
            })
        }
    }
    .map_err(|m| fail(Some(id), m))?;
    Ok(Envelope { id, op, request })
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
