//! Results: the one place where what an operation did becomes the CBOR of a reply's `ok`.
//!
//! The engine's operations return typed values: a read returns the object, list or report;
//! a change returns an [`Outcome`] around the object it is about. The constructors of
//! [`Answer`] turn those into the exact maps of protocol v1 (docs/protocol.md §8), with
//! the `changed` field where the wire has one, and remember the event the outcome stands
//! for, which the engine publishes ([`Answer::event`]). A reply's shape is written here
//! once per family, never by hand in the engine.

use ciborium::Value;
use serde::Serialize;

use super::Body;
use crate::model::{Attachment, EventKind, Object, Outcome};

/// A result that could not be encoded (a fault in shelfd, never the client's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encoding a reply: {0}")]
pub struct EncodeError(pub String);

/// The event a change stands for: its kind and the id of the object it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `object.created`, `object.changed` or `object.deleted`.
    pub kind: EventKind,
    /// The id of the share, snapshot, export, attachment, image, upload or job (empty
    /// for `reconcile`, which is about the whole tree).
    pub object: String,
}

/// The typed result of one operation, encoded: the reply's `ok` value and the event it
/// stands for (`None` for a read and for a change that changed nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    value: Body,
    event: Option<Change>,
}

/// `hello`'s answer before the engine adds its drivers' status: `{server, version,
/// protocols, features, node}`.
#[derive(Debug, Clone, Serialize)]
pub struct Hello {
    /// The server's name (`shelfd`).
    pub server: &'static str,
    /// Its version.
    pub version: &'static str,
    /// The protocol versions it speaks.
    pub protocols: &'static [u32],
    /// The features it advertises.
    pub features: &'static [&'static str],
    /// Who this node is: `{id, name}`.
    pub node: crate::model::Node,
}

/// Serialize a typed value into CBOR.
fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Value, EncodeError> {
    Value::serialized(v).map_err(|e| EncodeError(e.to_string()))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn fields(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// The event of `outcome`, about the object with `id`.
fn change<T>(outcome: &Outcome<T>, id: &str) -> Option<Change> {
    outcome.event().map(|kind| Change {
        kind,
        object: id.to_string(),
    })
}

impl Answer {
    /// The reply's `ok` value (`None` for an encoded list, [`Answer::list`]).
    pub fn value(&self) -> Option<&Value> {
        match &self.value {
            Body::Value(v) => Some(v),
            Body::Cbor(_) => None,
        }
    }

    /// The reply's `ok`, taken out.
    pub fn into_body(self) -> Body {
        self.value
    }

    /// The event to publish when this answer is the result of running the request now
    /// (a kept answer replayed for an idempotency key publishes nothing).
    pub fn event(&self) -> Option<&Change> {
        self.event.as_ref()
    }

    /// A read: the object, list or report as it serializes (`share.show`, `tree`, ...).
    pub fn read<T: Serialize + ?Sized>(v: &T) -> Result<Answer, EncodeError> {
        Ok(Answer {
            value: Body::Value(encode(v)?),
            event: None,
        })
    }

    /// A list read (`share.list`, `snapshot.list`, `tree`): the rows as they serialize,
    /// written straight into CBOR bytes, the same bytes [`Answer::read`]'s value encodes
    /// to, without building the value.
    pub fn list<T: Serialize + ?Sized>(v: &T) -> Result<Answer, EncodeError> {
        let mut bytes = Vec::with_capacity(4096);
        ciborium::into_writer(v, &mut bytes).map_err(|e| EncodeError(e.to_string()))?;
        Ok(Answer {
            value: Body::Cbor(bytes),
            event: None,
        })
    }

    /// Add a field at the end of a map answer (`share.show`'s `exports`, `pool.show`'s
    /// `drivers`, `share.resize`'s `warnings`); an answer that is not a map is unchanged.
    pub fn with(mut self, key: &str, v: Value) -> Answer {
        if let Body::Value(Value::Map(m)) = &mut self.value {
            m.push((text(key), v));
        }
        self
    }

    /// A change about one object: `{<kind>: object, changed}` (`share.create`,
    /// `share.resize`, `share.set_metadata`, `share.clone`, `snapshot.create`,
    /// `export.create`).
    pub fn object<T: Object + Serialize>(o: &Outcome<T>) -> Result<Answer, EncodeError> {
        let obj = o.object();
        Ok(Answer {
            value: Body::Value(fields(vec![
                (T::KIND, encode(obj)?),
                ("changed", Value::Bool(o.changed())),
            ])),
            event: change(o, obj.id()),
        })
    }

    /// A change finished by a job (a full copy on a pool that cannot reflink):
    /// `{<kind>: object, job, changed}`.
    pub fn object_by_job<T: Object + Serialize>(
        o: &Outcome<T>,
        job: &str,
    ) -> Result<Answer, EncodeError> {
        let obj = o.object();
        Ok(Answer {
            value: Body::Value(fields(vec![
                (T::KIND, encode(obj)?),
                ("job", text(job)),
                ("changed", Value::Bool(o.changed())),
            ])),
            event: change(o, obj.id()),
        })
    }

    /// A removal: `{deleted: id, changed}` (`snapshot.delete`, `export.delete`,
    /// `image.delete`, `image.upload.abort`).
    pub fn deleted(o: &Outcome<String>) -> Answer {
        Answer {
            value: Body::Value(fields(vec![
                ("deleted", text(o.object())),
                ("changed", Value::Bool(o.changed())),
            ])),
            event: change(o, o.object()),
        }
    }

    /// `share.delete`: `{deleted: id, snapshots_deleted, changed}`.
    pub fn share_deleted(o: &Outcome<String>, snapshots_deleted: usize) -> Answer {
        Answer {
            value: Body::Value(fields(vec![
                ("deleted", text(o.object())),
                (
                    "snapshots_deleted",
                    Value::Integer(snapshots_deleted.into()),
                ),
                ("changed", Value::Bool(o.changed())),
            ])),
            event: change(o, o.object()),
        }
    }

    /// `share.attach`: `{connection_info, attachment, changed: true}` for a new
    /// attachment; `{connection_info, changed: false}` when the same connector was
    /// already attached (the attachment is not repeated).
    pub fn attached(
        o: &Outcome<Attachment>,
        connection_info: Value,
    ) -> Result<Answer, EncodeError> {
        let mut pairs = vec![("connection_info", connection_info)];
        if o.changed() {
            pairs.push(("attachment", encode(o.object())?));
        }
        pairs.push(("changed", Value::Bool(o.changed())));
        Ok(Answer {
            value: Body::Value(fields(pairs)),
            event: change(o, o.object().id()),
        })
    }

    /// `share.detach`: `{detached: attachment, changed: true}`, or `{detached: null,
    /// changed: false}` when that connector had no attachment.
    pub fn detached(o: &Outcome<Option<Attachment>>) -> Result<Answer, EncodeError> {
        let detached = match o.object() {
            Some(a) => encode(a)?,
            None => Value::Null,
        };
        let id = o.object().as_ref().map(|a| a.id.as_str()).unwrap_or("");
        Ok(Answer {
            value: Body::Value(fields(vec![
                ("detached", detached),
                ("changed", Value::Bool(o.changed())),
            ])),
            event: change(o, id),
        })
    }

    /// An import started (`image.import`, `image.upload.finish`): `{job, image}`, the
    /// image still `creating`. No `changed` field: an import always starts one.
    pub fn import_started<T: Object + Serialize>(
        job: &str,
        image: &T,
    ) -> Result<Answer, EncodeError> {
        Ok(Answer {
            value: Body::Value(fields(vec![("job", text(job)), (T::KIND, encode(image)?)])),
            event: Some(Change {
                kind: EventKind::Created,
                object: image.id().to_string(),
            }),
        })
    }

    /// `image.upload.begin`: `{upload: id}`.
    pub fn upload_begun(upload: &str) -> Answer {
        Answer {
            value: Body::Value(fields(vec![("upload", text(upload))])),
            event: Some(Change {
                kind: EventKind::Created,
                object: upload.to_string(),
            }),
        }
    }

    /// `image.upload.chunk`: `{received}`, the bytes received so far (not an event: a
    /// chunk changes only its own unfinished upload).
    pub fn received(bytes: u64) -> Answer {
        Answer {
            value: Body::Value(fields(vec![("received", Value::Integer(bytes.into()))])),
            event: None,
        }
    }

    /// A byte stream opened (`snapshot.export` without a path, `snapshot.send`):
    /// `{stream, job}` and the op's own fields after them (`size`, `base`). Not an event
    /// (the job's events follow it).
    pub fn stream_opened(stream: &str, job: &str, extra: Vec<(&str, Value)>) -> Answer {
        let mut pairs = vec![("stream", text(stream)), ("job", text(job))];
        pairs.extend(extra);
        Answer {
            value: Body::Value(fields(pairs)),
            event: None,
        }
    }

    /// `stream.read`: `{data, end, offset}`, `data` a byte string starting at byte
    /// `offset` of the stream (not an event: a read moves only its own stream on).
    pub fn stream_chunk(data: Vec<u8>, end: bool, offset: u64) -> Answer {
        Answer {
            value: Body::Value(fields(vec![
                ("data", Value::Bytes(data)),
                ("end", Value::Bool(end)),
                ("offset", Value::Integer(offset.into())),
            ])),
            event: None,
        }
    }

    /// `job.cancel`: `{job, changed}` (`changed: false` when the job had already ended).
    pub fn job_cancelled(o: &Outcome<String>) -> Answer {
        Answer {
            value: Body::Value(fields(vec![
                ("job", text(o.object())),
                ("changed", Value::Bool(o.changed())),
            ])),
            event: change(o, o.object()),
        }
    }

    /// `reconcile`: the report as it serializes; the event is `object.changed` about the
    /// whole tree (empty `object`) when the outcome is `Changed`.
    pub fn reconciled<T: Serialize>(o: &Outcome<T>) -> Result<Answer, EncodeError> {
        Ok(Answer {
            value: Body::Value(encode(o.object())?),
            event: change(o, ""),
        })
    }
}

#[cfg(test)]
#[path = "result_tests.rs"]
mod tests;
