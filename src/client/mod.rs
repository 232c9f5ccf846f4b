//! The client library: a blocking connection to shelfd that `shelfctl`, integrations and
//! tests use. It speaks only the wire protocol (docs/protocol.md), so it is also the
//! reference for writing a client in another language.

use std::os::unix::net::UnixStream;
use std::path::Path;

use ciborium::Value;

use crate::proto::frame::{self, FrameError};
use crate::proto::{envelope_value, Request};

/// Largest reply frame the client accepts.
pub const MAX_REPLY: u32 = 64 << 20;

/// Deepest nesting accepted in a reply (a `tree` of many clone generations is deep; the
/// server cuts lineage at [`crate::model::MAX_TREE_DEPTH`] generations).
pub const REPLY_DEPTH: usize = 1024;

/// An error reply from the server: its stable code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RemoteError {
    /// The wire code (`not_found`, `invalid_argument`, ...).
    pub code: String,
    /// The server's message.
    pub message: String,
}

/// Anything that can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting or talking to the socket failed.
    #[error("cannot talk to shelfd at {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Framing failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The server answered with an error.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The server's reply does not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Remote(r) => Some(&r.code),
            _ => None,
        }
    }
}

/// One reply: the id it answers (None for connection-level errors) and its outcome.
pub type Received = (Option<u64>, Result<Value, RemoteError>);

/// A connection to shelfd.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    next_id: u64,
    /// Event frames read while waiting for a reply (after `events.subscribe`).
    events: std::collections::VecDeque<Value>,
}

/// Build an argument map from pairs.
pub fn args(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::Text(k.to_string()), v))
            .collect(),
    )
}

/// Look up a key of a CBOR map.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

/// Take a key's value out of a CBOR map (the rest is dropped).
fn take(v: Value, key: &str) -> Option<Value> {
    match v {
        Value::Map(pairs) => pairs
            .into_iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Look up a text field of a CBOR map.
pub fn get_text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key)?.as_text()
}

/// Look up an unsigned integer field of a CBOR map.
pub fn get_u64(v: &Value, key: &str) -> Option<u64> {
    get(v, key)?
        .as_integer()
        .and_then(|i| u64::try_from(i).ok())
}

impl Client {
    /// Connect to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Client {
            stream,
            next_id: 1,
            events: std::collections::VecDeque::new(),
        })
    }

    /// Send a request without waiting for its reply; returns its id (pipelining).
    pub fn send(&mut self, op: &str, args: Value) -> Result<u64, ClientError> {
        self.send_keyed(op, args, None)
    }

    /// Send a request carrying an idempotency key (a retry with the same key gets the first
    /// answer); returns its id.
    pub fn send_keyed(
        &mut self,
        op: &str,
        args: Value,
        key: Option<&str>,
    ) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(&frame::encode(&envelope_value(id, op, args, key)))?;
        Ok(id)
    }

    /// Send a typed request without waiting for its reply, with an optional idempotency
    /// key; returns its id (pipelining).
    pub fn send_request(&mut self, req: &Request, key: Option<&str>) -> Result<u64, ClientError> {
        let (op, args) = req.to_wire();
        self.send_keyed(op, args, key)
    }

    /// Write raw bytes to the socket (for tests of hostile input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        use std::io::Write;
        self.stream
            .write_all(bytes)
            .map_err(|source| ClientError::Connect {
                path: "(connected socket)".into(),
                source,
            })
    }

    /// Receive the next reply, whichever request it answers. `Ok(None)` when the server
    /// closed the connection.
    pub fn recv(&mut self) -> Result<Option<Received>, ClientError> {
        let v = loop {
            let Some(v) = self.read_value()? else {
                return Ok(None);
            };
            // Event frames (after events.subscribe) wait for recv_event.
            match get(&v, "event") {
                Some(e) if get(&v, "id").is_none() => self.events.push_back(e.clone()),
                _ => break v,
            }
        };
        let id = match get(&v, "id") {
            Some(Value::Integer(i)) => {
                Some(u64::try_from(*i).map_err(|_| ClientError::Protocol("negative id".into()))?)
            }
            Some(Value::Null) => None,
            _ => return Err(ClientError::Protocol("reply without id".into())),
        };
        if get(&v, "ok").is_some() {
            // Moved out, not copied: a list of thousands of objects is decoded once.
            let ok = take(v, "ok").expect("the reply has ok");
            return Ok(Some((id, Ok(ok))));
        }
        let err = get(&v, "err")
            .ok_or_else(|| ClientError::Protocol("reply has neither ok nor err".into()))?;
        let code = get_text(err, "code").unwrap_or("internal").to_string();
        let message = get_text(err, "message").unwrap_or("").to_string();
        Ok(Some((id, Err(RemoteError { code, message }))))
    }

    /// The next frame's body as it came, not decoded (`Ok(None)` when the server closed
    /// the connection): for a caller that checks only a few bytes of a large reply (the
    /// bench, which measures the server's side of a read).
    pub fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(frame::read_frame_blocking(&mut self.stream, MAX_REPLY)?)
    }

    fn read_value(&mut self) -> Result<Option<Value>, ClientError> {
        let Some(body) = frame::read_frame_blocking(&mut self.stream, MAX_REPLY)? else {
            return Ok(None);
        };
        Ok(Some(frame::decode_body_with_depth(&body, REPLY_DEPTH)?))
    }

    /// The next event of this connection's subscription (`events.subscribe`); `Ok(None)`
    /// when the server closed the connection. Replies read meanwhile are an error: use a
    /// connection of its own for events, or [`Client::recv`] for both.
    pub fn recv_event(&mut self) -> Result<Option<Value>, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        let Some(v) = self.read_value()? else {
            return Ok(None);
        };
        match get(&v, "event") {
            Some(e) => Ok(Some(e.clone())),
            None => Err(ClientError::Protocol(
                "a reply arrived while waiting for an event".into(),
            )),
        }
    }

    /// Send one request given as an op name and an argument map, and wait for its reply
    /// (`shelfctl call`, and tests that send what no typed request can); prefer
    /// [`Client::request`].
    pub fn call(&mut self, op: &str, args: Value) -> Result<Value, ClientError> {
        self.call_keyed(op, args, None)
    }

    /// Send one request with an optional idempotency key and wait for its reply.
    pub fn call_keyed(
        &mut self,
        op: &str,
        args: Value,
        key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let id = self.send_keyed(op, args, key)?;
        loop {
            match self.recv()? {
                None => return Err(ClientError::Protocol("server closed the connection".into())),
                Some((Some(rid), result)) if rid == id => return Ok(result?),
                Some((None, Err(e))) => return Err(e.into()),
                Some(_) => continue,
            }
        }
    }

    /// Send one typed request and wait for its reply: the way to call shelfd, since the
    /// arguments are the structs the server parses ([`Request::to_wire`]).
    pub fn request(&mut self, req: &Request) -> Result<Value, ClientError> {
        self.request_keyed(req, None)
    }

    /// [`Client::request`] with an optional idempotency key.
    pub fn request_keyed(
        &mut self,
        req: &Request,
        key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let (op, args) = req.to_wire();
        self.call_keyed(op, args, key)
    }

    /// Set a read timeout on the socket (None: wait forever).
    pub fn set_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(t)
    }
}

/// Convert a CBOR value to JSON (byte strings become arrays of numbers; non-text map keys
/// are printed as text).
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Integer(i) => {
            let n = i128::from(*i);
            if let Ok(u) = u64::try_from(n) {
                J::from(u)
            } else if let Ok(s) = i64::try_from(n) {
                J::from(s)
            } else {
                J::String(n.to_string())
            }
        }
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Text(t) => J::String(t.clone()),
        Value::Bytes(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Text(t) => t.clone(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Tag(_, inner) => to_json(inner),
        _ => J::Null,
    }
}

/// Convert JSON to CBOR (for `shelfctl call`).
pub fn from_json(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::Integer(u.into())
            } else if let Some(i) = n.as_i64() {
                Value::Integer(i.into())
            } else {
                Value::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        J::String(s) => Value::Text(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        J::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::Text(k.clone()), from_json(v)))
                .collect(),
        ),
    }
}
