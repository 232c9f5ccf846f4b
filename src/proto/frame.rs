//! Framing: a 4-byte big-endian length, then exactly one CBOR data item.
//!
//! The length is checked against the maximum before any of the body is read, so an
//! oversized frame costs the reader four bytes. The body is read into a buffer that grows
//! as bytes arrive, never allocated at the announced length: a peer that announces a
//! megabyte and sends ten bytes costs ten bytes (the server also charges what it holds to
//! a shared budget). Decoding limits nesting depth and the number of data items, and
//! refuses trailing bytes after the one item.

use std::io::{Read, Write};

use ciborium::Value;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Deepest nesting of arrays, maps and tags accepted in a frame.
pub const MAX_DEPTH: usize = 32;
/// Most data items (every integer, string, array, map key and value...) accepted in one
/// request frame. The largest valid request holds a few hundred; a megabyte of one-byte
/// items would decode into tens of megabytes of values.
pub const MAX_ITEMS: usize = 65_536;

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced length is over the maximum; the body was not read.
    #[error("frame of {len} bytes is larger than the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The maximum in force.
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced (4 for the header).
        want: usize,
    },
    /// The rest of a frame did not arrive in time.
    #[error("the rest of a {len}-byte frame did not arrive within {secs} s")]
    Timeout {
        /// Announced length.
        len: u32,
        /// The time allowed.
        secs: u64,
    },
    /// A frame's header did not arrive in time once its first byte had.
    #[error("a frame header did not arrive within {secs} s of its first byte")]
    HeaderTimeout {
        /// The time allowed.
        secs: u64,
    },
    /// The server's budget of buffered request bytes stayed spent while this frame
    /// waited for room.
    #[error("shelfd's buffer for incoming requests (limits.request_buffer_bytes) stayed full for {secs} s; send the request again later")]
    BudgetSpent {
        /// How long the frame waited.
        secs: u64,
    },
    /// A zero-length frame cannot hold a data item.
    #[error("empty frame")]
    Empty,
    /// The body is not one well-formed CBOR item within the limits.
    #[error("frame is not one valid CBOR item: {0}")]
    Cbor(String),
    /// The transport failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encode a value as a whole frame (header and body), in one buffer: the body is written
/// after room for the header, which is filled in once the body's length is known.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[0; 4]);
    ciborium::ser::into_writer(value, &mut out).expect("writing CBOR to a Vec cannot fail");
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Decode one request frame body into a value: exactly one item, nesting at most
/// [`MAX_DEPTH`], at most [`MAX_ITEMS`] items. The items are counted by a skim that
/// allocates nothing before the decoder builds any value, so the cost of a frame is
/// bounded by its length.
pub fn decode_body(body: &[u8]) -> Result<Value, FrameError> {
    check_item_count(body, MAX_ITEMS)?;
    decode_body_with_depth(body, MAX_DEPTH)
}

/// Refuse a body holding more than `max` data items. Anything malformed is left for the
/// decoder to describe: the skim stops there, having counted at most `max` items.
pub fn check_item_count(body: &[u8], max: usize) -> Result<(), FrameError> {
    // Items still expected in each open container: Some(n) definite, None indefinite.
    let mut open: Vec<Option<u64>> = vec![Some(1)];
    let (mut pos, mut items) = (0usize, 0usize);
    loop {
        while let Some(Some(0)) = open.last() {
            open.pop();
        }
        let Some(top) = open.last_mut() else {
            return Ok(());
        };
        let Some(&b) = body.get(pos) else {
            return Ok(());
        };
        pos += 1;
        if b == 0xff {
            if top.is_some() {
                return Ok(());
            }
            open.pop();
            continue;
        }
        if let Some(n) = top {
            *n -= 1;
        }
        items += 1;
        if items > max {
            return Err(FrameError::Cbor(format!(
                "more than {max} data items in one frame"
            )));
        }
        let (major, info) = (b >> 5, b & 0x1f);
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => {
                let k = 1usize << (info - 24);
                let Some(bytes) = body.get(pos..pos + k) else {
                    return Ok(());
                };
                pos += k;
                Some(bytes.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
            }
            31 => None,
            _ => return Ok(()),
        };
        match (major, arg) {
            (2 | 3, Some(n)) => match usize::try_from(n).ok().and_then(|n| pos.checked_add(n)) {
                Some(end) if end <= body.len() => pos = end,
                _ => return Ok(()),
            },
            (2..=5, None) => open.push(None),
            (4, Some(n)) => open.push(Some(n)),
            (5, Some(n)) => open.push(Some(n.saturating_mul(2))),
            (6, _) => open.push(Some(1)),
            _ => {}
        }
        if open.len() > 2 * MAX_DEPTH + 2 {
            return Ok(()); // the decoder's nesting limit describes it
        }
    }
}

/// Decode one frame body, nesting at most `depth` levels (clients reading deep `tree`
/// replies allow more than the server allows in requests).
pub fn decode_body_with_depth(body: &[u8], depth: usize) -> Result<Value, FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut cursor = std::io::Cursor::new(body);
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut cursor, depth)
        .map_err(|e| FrameError::Cbor(describe_cbor_error(e, depth)))?;
    let used = cursor.position() as usize;
    if used != body.len() {
        return Err(FrameError::Cbor(format!(
            "{} trailing bytes after the data item",
            body.len() - used
        )));
    }
    Ok(value)
}

fn describe_cbor_error(e: ciborium::de::Error<std::io::Error>, depth: usize) -> String {
    match e {
        ciborium::de::Error::Io(_) => "data item is cut short".to_string(),
        ciborium::de::Error::Syntax(off) => format!("syntax error at byte {off}"),
        ciborium::de::Error::Semantic(off, msg) => match off {
            Some(o) => format!("{msg} at byte {o}"),
            None => msg,
        },
        ciborium::de::Error::RecursionLimitExceeded => {
            format!("nested deeper than {depth} levels")
        }
    }
}

/// Read a frame header from an async stream and check it against the maximum. `Ok(None)`
/// is a clean end of stream between frames.
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<u32>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { got, want: 4 })
            };
        }
        got += n;
    }
    check_header(header, max).map(Some)
}

/// The length a frame header announces, checked against the maximum.
pub fn check_header(header: [u8; 4], max: u32) -> Result<u32, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max,
        });
    }
    Ok(len)
}

/// Read a frame body of `len` bytes (after [`read_header`]), the buffer growing as bytes
/// arrive.
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: u32) -> Result<Vec<u8>, FrameError> {
    read_body_growing(r, len, 4096, |_| async { Ok(()) }).await
}

/// Read a frame body of `len` bytes into a buffer that starts at `free` bytes (at most)
/// and doubles as bytes arrive, up to `len`. Before the buffer grows past `free`,
/// `grow(n)` is awaited for the `n` bytes it is about to take (the server charges them to
/// its budget, and may refuse the frame there).
pub async fn read_body_growing<R, F, Fut>(
    r: &mut R,
    len: u32,
    free: usize,
    mut grow: F,
) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin,
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), FrameError>>,
{
    let len = len as usize;
    let mut body: Vec<u8> = Vec::new();
    let mut got = 0;
    while got < len {
        if got == body.len() {
            let next = if body.is_empty() {
                len.min(free.max(64))
            } else {
                len.min(body.len().saturating_mul(2))
            };
            let more = next.saturating_sub(free) - body.len().saturating_sub(free);
            if more > 0 {
                grow(more).await?;
            }
            // A zeroed allocation (pages the kernel zeroes as they are touched) and one
            // copy, rather than writing `next` zeros.
            let mut bigger = vec![0u8; next];
            bigger[..body.len()].copy_from_slice(&body);
            body = bigger;
        }
        let n = r.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated { got, want: len });
        }
        got += n;
    }
    Ok(body)
}

/// Read one frame body from an async stream. `Ok(None)` is a clean end of stream between
/// frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, FrameError> {
    match read_header(r, max).await? {
        None => Ok(None),
        Some(len) => read_body(r, len).await.map(Some),
    }
}

/// Write one encoded frame (from [`encode`]) to an async stream.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

/// Read one frame body from a blocking stream (the client side).
pub fn read_frame_blocking<R: Read>(r: &mut R, max: u32) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut header[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { got, want: 4 })
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max,
        });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated {
            got: 0,
            want: len as usize,
        },
        _ => FrameError::Io(e),
    })?;
    Ok(Some(body))
}

/// Write one value as a frame to a blocking stream.
pub fn write_frame_blocking<W: Write>(w: &mut W, value: &Value) -> std::io::Result<()> {
    w.write_all(&encode(value))?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: Vec<(&str, Value)>) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::Text(k.into()), v))
                .collect(),
        )
    }

    #[test]
    fn round_trip() {
        let v = map(vec![
            ("id", Value::Integer(7.into())),
            ("op", Value::Text("hello".into())),
            ("args", Value::Map(vec![])),
        ]);
        let frame = encode(&v);
        let body = smol::block_on(read_frame(&mut &frame[..], 1024))
            .unwrap()
            .unwrap();
        assert_eq!(decode_body(&body).unwrap(), v);
        let body = read_frame_blocking(&mut &frame[..], 1024).unwrap().unwrap();
        assert_eq!(decode_body(&body).unwrap(), v);
    }

    #[test]
    fn oversized_frame_is_refused_from_the_header() {
        let mut frame = (2000u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xff; 3]); // the body is never looked at
        let err = smol::block_on(read_frame(&mut &frame[..], 1024)).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 2000,
                    max: 1024
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_frames_are_reported() {
        let frame = encode(&Value::Text("hello".into()));
        for cut in 1..frame.len() {
            let err = smol::block_on(read_frame(&mut &frame[..cut], 1024)).unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
        assert!(smol::block_on(read_frame(&mut &frame[..0], 1024))
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert!(matches!(decode_body(&[]), Err(FrameError::Empty)));
        assert!(
            decode_body(&[0xff]).is_err(),
            "break outside indefinite item"
        );
        assert!(decode_body(&[0x01, 0x02]).is_err(), "two items");
        assert!(
            decode_body(&[0x7a, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "4 GiB text in 5 bytes"
        );
        assert!(decode_body(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        let deep = vec![0x81u8; 10_000];
        let err = decode_body(&deep).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }

    #[test]
    fn items_are_counted_before_decoding() {
        // [_ 0, 0, ... ] with MAX_ITEMS zeros: the array and its items are one too many.
        let mut body = vec![0x9f];
        body.extend(std::iter::repeat_n(0u8, MAX_ITEMS));
        body.push(0xff);
        let err = decode_body(&body).unwrap_err();
        assert!(err.to_string().contains("data items"), "{err}");
        body.truncate(MAX_ITEMS - 1);
        body.push(0xff);
        assert!(decode_body(&body).is_ok());
        // Strings count once whatever their length; maps count keys and values.
        let mut text = vec![0x7a, 0, 1, 0, 0];
        text.extend(std::iter::repeat_n(b'a', 65536));
        assert!(check_item_count(&text, 1).is_ok());
        assert!(check_item_count(&[0xa1, 0x01, 0x02], 2).is_err());
        assert!(check_item_count(&[0xa1, 0x01, 0x02], 3).is_ok());
        // Malformed input is left to the decoder.
        assert!(
            check_item_count(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 4).is_ok()
        );
        assert!(decode_body(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn bodies_grow_as_they_arrive() {
        let frame = encode(&Value::Bytes(vec![7; 100_000]));
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap());
        let mut asked = Vec::new();
        let body = smol::block_on(read_body_growing(&mut &frame[4..], len, 4096, |n| {
            asked.push(n);
            async { Ok(()) }
        }))
        .unwrap();
        assert_eq!(body, frame[4..]);
        assert_eq!(
            asked.iter().sum::<usize>(),
            len as usize - 4096,
            "{asked:?}"
        );
        // A frame announced large but cut short cost what arrived, not what it announced.
        let mut asked = 0;
        let err = smol::block_on(read_body_growing(&mut &[1u8; 10][..], 1 << 20, 4096, |n| {
            asked += n;
            async { Ok(()) }
        }))
        .unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { got: 10, .. }),
            "{err}"
        );
        assert_eq!(asked, 0);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_body(&body);
        }

        #[test]
        fn text_round_trips(s in "\\PC{0,200}", n in any::<u64>()) {
            let v = map(vec![("s", Value::Text(s)), ("n", Value::Integer(n.into()))]);
            let frame = encode(&v);
            let body = read_frame_blocking(&mut &frame[..], 1 << 20).unwrap().unwrap();
            prop_assert_eq!(decode_body(&body).unwrap(), v);
        }
    }
}
