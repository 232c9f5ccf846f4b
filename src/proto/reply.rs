//! Replies: `{id, ok: result}` or `{id, err: {code, message}}`.

use ciborium::Value;

use super::ErrorCode;

/// A reply to one request. `id` is `None` (sent as CBOR null) only for errors that cannot
/// be tied to a request, such as an undecodable frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request's id.
    pub id: Option<u64>,
    /// The result, or the error code and message.
    pub result: Result<Value, (ErrorCode, String)>,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Encode a reply as a CBOR value (ready for [`super::frame::encode`]).
pub fn encode_reply(reply: &Reply) -> Value {
    let id = match reply.id {
        Some(i) => Value::Integer(i.into()),
        None => Value::Null,
    };
    let body = match &reply.result {
        Ok(v) => (text("ok"), v.clone()),
        Err((code, message)) => (
            text("err"),
            Value::Map(vec![
                (text("code"), text(code.as_str())),
                (text("message"), text(message)),
            ]),
        ),
    };
    Value::Map(vec![(text("id"), id), body])
}
