//! The envelope `{id, op, args}`: decoding a frame's value into an [`Envelope`] with a
//! typed [`Request`].

use ciborium::Value;
use serde::de::DeserializeOwned;

use super::{NoArgs, Request};

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
    if let Err(message) = crate::proto::strict::check_request(&entries) {
        return Err(fail(
            crate::proto::strict::unambiguous_id(&entries),
            message,
        ));
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
        "stream.read" => args(&op, a).map(Request::StreamRead),
        "stream.close" => args(&op, a).map(Request::StreamClose),
        "image.show" => args(&op, a).map(Request::ImageShow),
        "image.delete" => args(&op, a).map(Request::ImageDelete),
        "job.list" => args::<NoArgs>(&op, a).map(|_| Request::JobList),
        "job.show" => args(&op, a).map(Request::JobShow),
        "job.cancel" => args(&op, a).map(Request::JobCancel),
        "events.subscribe" => args(&op, a).map(Request::EventsSubscribe),
        "snapshot.send" => args(&op, a).map(Request::SnapshotSend),
        "snapshot.receive.begin" => args(&op, a).map(Request::ReceiveBegin),
        "snapshot.receive.chunk" => args(&op, a).map(Request::ReceiveChunk),
        "snapshot.receive.finish" => args(&op, a).map(Request::ReceiveFinish),
        "snapshot.receive.abort" => args(&op, a).map(Request::ReceiveAbort),
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
