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

/// Longest error message sent, in bytes. Messages quote what the client sent (a share
/// reference, a name); a hostile client must not get a megabyte echoed back per request.
pub const MAX_MESSAGE: usize = 1024;

/// `message`, cut at a character boundary to at most [`MAX_MESSAGE`] bytes (plus `…`).
fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Encode a reply as a CBOR value (ready for [`super::frame::encode`]). The reply is
/// taken, not copied: a list answer of thousands of objects is moved into the frame's
/// value as it is.
pub fn encode_reply(reply: Reply) -> Value {
    let id = match reply.id {
        Some(i) => Value::Integer(i.into()),
        None => Value::Null,
    };
    let body = match reply.result {
        Ok(v) => (text("ok"), v),
        Err((code, message)) => (
            text("err"),
            Value::Map(vec![
                (text("code"), text(code.as_str())),
                (text("message"), Value::Text(bounded(&message))),
            ]),
        ),
    };
    Value::Map(vec![(text("id"), id), body])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = format!("no share {:?}", "é".repeat(5000));
        let v = encode_reply(Reply {
            id: Some(1),
            result: Err((ErrorCode::NotFound, long)),
        });
        let err = &v.as_map().unwrap()[1].1;
        let message = err.as_map().unwrap()[1].1.as_text().unwrap();
        assert!(
            message.len() <= MAX_MESSAGE + '…'.len_utf8(),
            "{}",
            message.len()
        );
        assert!(message.starts_with("no share \"éé") && message.ends_with('…'));
        assert_eq!(bounded("short"), "short");
    }
}
