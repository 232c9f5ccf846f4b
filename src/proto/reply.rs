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
    pub result: Result<Body, (ErrorCode, String)>,
}

/// A reply's `ok`: a value, or one CBOR data item already encoded. A list is written
/// straight from its typed rows into bytes ([`super::Answer::list`]): no tree of values
/// is built for 10,000 shares, which costs time, and memory that the allocator keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A value, encoded when the reply is framed.
    Value(Value),
    /// One well-formed CBOR data item, written by shelfd's own encoder.
    Cbor(Vec<u8>),
}

impl Body {
    /// The body as a value (an encoded one decoded: for kept answers and tests, never on
    /// a list's way out).
    pub fn into_value(self) -> Value {
        match self {
            Body::Value(v) => v,
            Body::Cbor(bytes) => ciborium::from_reader(bytes.as_slice())
                .expect("shelfd's own encoding of a reply decodes"),
        }
    }
}

impl From<Value> for Body {
    fn from(v: Value) -> Body {
        Body::Value(v)
    }
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

/// Encode a reply as a whole frame: `{id, ok}` or `{id, err: {code, message}}`. The reply
/// is taken, not copied, and written into one buffer after room for the frame's header;
/// an encoded body is copied in as it is.
pub fn encode_reply(reply: Reply) -> Vec<u8> {
    let id = match reply.id {
        Some(i) => Value::Integer(i.into()),
        None => Value::Null,
    };
    let mut out = Vec::with_capacity(match &reply.result {
        Ok(Body::Cbor(b)) => b.len() + 32,
        _ => 256,
    });
    out.extend_from_slice(&[0; 4]);
    // A map of two pairs, its first key `id`.
    out.extend_from_slice(&[0xa2, 0x62, b'i', b'd']);
    write_item(&mut out, &id);
    match reply.result {
        Ok(body) => {
            out.extend_from_slice(&[0x62, b'o', b'k']);
            match body {
                Body::Value(v) => write_item(&mut out, &v),
                Body::Cbor(bytes) => out.extend_from_slice(&bytes),
            }
        }
        Err((code, message)) => {
            out.extend_from_slice(&[0x63, b'e', b'r', b'r']);
            let err = Value::Map(vec![
                (text("code"), text(code.as_str())),
                (text("message"), Value::Text(bounded(&message))),
            ]);
            write_item(&mut out, &err);
        }
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

fn write_item(out: &mut Vec<u8>, v: &Value) {
    ciborium::ser::into_writer(v, out).expect("writing CBOR to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame's body, decoded.
    fn decoded(frame: &[u8]) -> Value {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        ciborium::from_reader(&frame[4..]).unwrap()
    }

    #[test]
    fn replies_are_the_maps_of_the_protocol_whatever_their_body() {
        let list = Value::Array(vec![Value::Map(vec![(text("name"), text("a"))])]);
        let mut cbor = Vec::new();
        ciborium::into_writer(&list, &mut cbor).unwrap();
        let want = Value::Map(vec![
            (text("id"), Value::Integer(7.into())),
            (text("ok"), list.clone()),
        ]);
        for body in [Body::Value(list.clone()), Body::Cbor(cbor.clone())] {
            let frame = encode_reply(Reply {
                id: Some(7),
                result: Ok(body.clone()),
            });
            assert_eq!(decoded(&frame), want);
            assert_eq!(body.into_value(), list);
        }
        let frame = encode_reply(Reply {
            id: None,
            result: Err((ErrorCode::Busy, "later".into())),
        });
        let want = Value::Map(vec![
            (text("id"), Value::Null),
            (
                text("err"),
                Value::Map(vec![
                    (text("code"), text("busy")),
                    (text("message"), text("later")),
                ]),
            ),
        ]);
        assert_eq!(decoded(&frame), want);
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = format!("no share {:?}", "é".repeat(5000));
        let v = decoded(&encode_reply(Reply {
            id: Some(1),
            result: Err((ErrorCode::NotFound, long)),
        }));
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
