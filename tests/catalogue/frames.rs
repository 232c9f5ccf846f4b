//! Cases about framing, CBOR well-formedness and the request envelope.

use ciborium::Value;

use super::*;

/// `{"id": 1, "op": "hello"}` as bytes, for hand-made variants.
const HELLO_BODY: &[u8] = &[
    0xa2, 0x62, b'i', b'd', 0x01, 0x62, b'o', b'p', 0x65, b'h', b'e', b'l', b'l', b'o',
];

fn header(len: u32) -> Vec<u8> {
    len.to_be_bytes().to_vec()
}

fn nested_args(levels: usize) -> Vec<u8> {
    // {"id": 1, "op": "hello", "args": {"x": [[[...0...]]]}}: the envelope is level 1,
    // args level 2, then `levels` arrays.
    let mut body = vec![0xa3, 0x62, b'i', b'd', 0x01, 0x62, b'o', b'p'];
    body.extend_from_slice(&[0x65, b'h', b'e', b'l', b'l', b'o']);
    body.extend_from_slice(&[0x64, b'a', b'r', b'g', b's', 0xa1, 0x61, b'x']);
    body.extend(std::iter::repeat_n(0x81u8, levels));
    body.push(0x00);
    body
}

fn closes(says: &[&'static str]) -> Expect {
    err(None, "invalid_argument", says, After::Closes)
}

fn null_id(says: &[&'static str]) -> Expect {
    err(None, "invalid_argument", says, After::Continues)
}

fn framing() -> Vec<Case> {
    let mut exactly_max = req(1, "hello", vec![("pad", t(""))]);
    let overhead = cbor(&exactly_max).len() + 4; // text header grows from 1 to 5 bytes
    exactly_max = req(
        1,
        "hello",
        vec![("pad", t(&"p".repeat(MAX_FRAME as usize - overhead)))],
    );
    assert_eq!(cbor(&exactly_max).len(), MAX_FRAME as usize);
    let mut over_max = cbor(&exactly_max);
    over_max.push(0);
    vec![
        case(
            "frame-header-over-max-by-one",
            header(MAX_FRAME + 1),
            Stage::Header,
            closes(&["1048577", "larger than the maximum"]),
        ),
        case(
            "frame-header-4gib",
            header(u32::MAX),
            Stage::Header,
            closes(&["4294967295", "larger than the maximum"]),
        ),
        case(
            "frame-over-max-with-body",
            frame(&over_max),
            Stage::Header,
            closes(&["larger than the maximum"]),
        ),
        case(
            "frame-exactly-max-is-read",
            frame_of(&exactly_max),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["unknown field", "pad"],
                After::Continues,
            ),
        ),
        case(
            "frame-zero-length",
            header(0),
            Stage::Decode,
            null_id(&["empty frame"]),
        ),
        case(
            "frame-truncated-header",
            vec![0, 0],
            Stage::Truncated,
            Expect::Nothing,
        ),
        case(
            "frame-truncated-body",
            {
                let mut f = header(100);
                f.extend_from_slice(&HELLO_BODY[..10]);
                f
            },
            Stage::Truncated,
            Expect::Nothing,
        ),
        case(
            "frame-http-request",
            frame(b"GET / HTTP/1.1\r\nHost: shelf\r\n\r\n"),
            Stage::Decode,
            null_id(&["not one valid CBOR item", "trailing bytes"]),
        ),
        case(
            "frame-json-body",
            frame(br#"{"id": 1, "op": "hello"}"#),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        case(
            "frame-break-byte-only",
            frame(&[0xff]),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        case(
            "frame-reserved-additional-info",
            frame(&[0x1c]),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        case(
            "frame-two-items",
            frame(&[HELLO_BODY, HELLO_BODY].concat()),
            Stage::Decode,
            null_id(&["14 trailing bytes"]),
        ),
        case(
            "frame-item-cut-short",
            frame(&HELLO_BODY[..9]),
            Stage::Decode,
            null_id(&["cut short"]),
        ),
        case(
            "frame-invalid-utf8-text",
            frame(&[
                0xa2, 0x62, b'i', b'd', 0x01, 0x62, b'o', b'p', 0x62, 0xff, 0xfe,
            ]),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        case(
            "frame-unknown-simple-value",
            frame(&[
                0xa3, 0x62, b'i', b'd', 0x01, 0x62, b'o', b'p', 0x65, b'h', b'e', b'l', b'l', b'o',
                0x64, b'a', b'r', b'g', b's', 0xf0,
            ]),
            Stage::Decode,
            null_id(&["simple"]),
        ),
    ]
}

fn huge_and_deep() -> Vec<Case> {
    let mut text_4g = vec![0x7a, 0xff, 0xff, 0xff, 0xff];
    text_4g.extend_from_slice(b"abc");
    vec![
        case(
            "cbor-nesting-33-levels",
            frame(&nested_args(31)),
            Stage::Decode,
            null_id(&["nested deeper than 32"]),
        ),
        case(
            "cbor-nesting-32-levels-is-decoded",
            frame(&nested_args(30)),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["hello", "unknown field"],
                After::Continues,
            ),
        ),
        case(
            "cbor-nesting-10000-arrays",
            frame(&[vec![0x81u8; 10_000], vec![0x00]].concat()),
            Stage::Decode,
            null_id(&["nested deeper than 32"]),
        ),
        case(
            "cbor-nesting-10000-maps",
            frame(&[[0xa1u8, 0x61, b'k'].repeat(10_000), vec![0x00]].concat()),
            Stage::Decode,
            null_id(&["nested deeper than 32"]),
        ),
        case(
            "cbor-text-announces-4gib",
            frame(&text_4g),
            Stage::Decode,
            null_id(&["cut short"]),
        ),
        case(
            "cbor-bytes-announces-2p64",
            frame(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        case(
            "cbor-array-announces-2p64-items",
            frame(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        case(
            "cbor-map-announces-2p32-pairs",
            frame(&[0xba, 0xff, 0xff, 0xff, 0xff, 0x62, b'i', b'd', 0x01]),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        case(
            "cbor-indefinite-map-without-break",
            frame(&[0xbf, 0x62, b'i', b'd', 0x01]),
            Stage::Decode,
            null_id(&["cut short"]),
        ),
        case(
            "cbor-break-inside-definite-array",
            frame(&[0x82, 0x01, 0xff]),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        case(
            "cbor-indefinite-text-with-byte-chunk",
            frame(&[
                0xa2, 0x62, b'i', b'd', 0x01, 0x62, b'o', b'p', 0x7f, 0x42, b'h', b'e', 0xff,
            ]),
            Stage::Decode,
            null_id(&["not one valid CBOR item"]),
        ),
        // Valid CBOR that looks odd: indefinite-length items are well-formed and accepted.
        case(
            "cbor-indefinite-envelope-map-is-valid",
            frame(&[
                0xbf, 0x62, b'i', b'd', 0x01, 0x62, b'o', b'p', 0x65, b'h', b'e', b'l', b'l', b'o',
                0xff,
            ]),
            Stage::Accepted,
            Expect::Ok { id: 1 },
        ),
        case(
            "cbor-indefinite-op-text-is-valid",
            frame(&[
                0xa2, 0x62, b'i', b'd', 0x01, 0x62, b'o', b'p', 0x7f, 0x63, b'h', b'e', b'l', 0x62,
                b'l', b'o', 0xff,
            ]),
            Stage::Accepted,
            Expect::Ok { id: 1 },
        ),
    ]
}

fn envelope() -> Vec<Case> {
    let hello_with = |id: Value| map(vec![("id", id), ("op", t("hello"))]);
    let bignum_id = Value::Tag(2, Box::new(Value::Bytes(vec![1, 0, 0, 0, 0, 0, 0, 0, 0])));
    let mut cases = vec![
        case(
            "envelope-is-array",
            frame_of(&Value::Array(vec![n(1), t("hello")])),
            Stage::Parse,
            null_id(&["must be a CBOR map"]),
        ),
        case(
            "envelope-is-integer",
            frame_of(&n(1)),
            Stage::Parse,
            null_id(&["must be a CBOR map"]),
        ),
        case(
            "envelope-is-null",
            frame_of(&Value::Null),
            Stage::Parse,
            null_id(&["must be a CBOR map"]),
        ),
        case(
            "envelope-self-describe-tag",
            frame_of(&Value::Tag(55799, Box::new(req(1, "hello", vec![])))),
            Stage::Parse,
            null_id(&["must be a CBOR map"]),
        ),
        case(
            "id-missing",
            frame_of(&map(vec![("op", t("hello"))])),
            Stage::Parse,
            null_id(&["unsigned integer \"id\""]),
        ),
        case(
            "id-negative",
            frame_of(&hello_with(Value::Integer((-1).into()))),
            Stage::Parse,
            null_id(&["unsigned integer \"id\""]),
        ),
        case(
            "id-text",
            frame_of(&hello_with(t("1"))),
            Stage::Parse,
            null_id(&["unsigned integer \"id\""]),
        ),
        case(
            "id-float",
            frame_of(&hello_with(Value::Float(1.0))),
            Stage::Parse,
            null_id(&["unsigned integer \"id\""]),
        ),
        case(
            "id-null",
            frame_of(&hello_with(Value::Null)),
            Stage::Parse,
            null_id(&["unsigned integer \"id\""]),
        ),
        case(
            "id-array",
            frame_of(&hello_with(Value::Array(vec![n(1)]))),
            Stage::Parse,
            null_id(&["unsigned integer \"id\""]),
        ),
        case(
            "id-bignum-2p64",
            frame_of(&hello_with(bignum_id)),
            Stage::Parse,
            null_id(&["CBOR tag 2 at \"id\""]),
        ),
        case(
            "id-epoch-tag",
            frame_of(&hello_with(Value::Tag(1, Box::new(n(1))))),
            Stage::Parse,
            null_id(&["CBOR tag 1 at \"id\""]),
        ),
        case(
            "id-max-u64-is-valid",
            frame_of(&hello_with(n(u64::MAX))),
            Stage::Accepted,
            Expect::Ok { id: u64::MAX },
        ),
        case(
            "envelope-duplicate-id",
            frame_of(&Value::Map(vec![
                (t("id"), n(1)),
                (t("id"), n(2)),
                (t("op"), t("hello")),
            ])),
            Stage::Parse,
            null_id(&["duplicate", "\"id\""]),
        ),
        case(
            "envelope-duplicate-op",
            frame_of(&Value::Map(vec![
                (t("id"), n(1)),
                (t("op"), t("share.delete")),
                (t("op"), t("hello")),
            ])),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["duplicate", "\"op\""],
                After::Continues,
            ),
        ),
        case(
            "envelope-unknown-field",
            frame_of(&map(vec![
                ("id", n(1)),
                ("op", t("hello")),
                ("role", t("admin")),
            ])),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["unknown request field", "role"],
                After::Continues,
            ),
        ),
        case(
            "envelope-integer-key",
            frame_of(&Value::Map(vec![
                (t("id"), n(1)),
                (t("op"), t("hello")),
                (n(3), t("x")),
            ])),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["keys must be text"],
                After::Continues,
            ),
        ),
        case(
            "op-missing",
            frame_of(&map(vec![("id", n(1))])),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["needs a text \"op\""],
                After::Continues,
            ),
        ),
        case(
            "op-integer",
            frame_of(&map(vec![("id", n(1)), ("op", n(1))])),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["\"op\" has the wrong type"],
                After::Continues,
            ),
        ),
        case(
            "op-uri-tag",
            frame_of(&map(vec![
                ("id", n(1)),
                ("op", Value::Tag(32, Box::new(t("hello")))),
            ])),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["CBOR tag 32 at \"op\""],
                After::Continues,
            ),
        ),
        case(
            "args-array",
            frame_of(&map(vec![
                ("id", n(1)),
                ("op", t("hello")),
                ("args", Value::Array(vec![])),
            ])),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["\"args\" has the wrong type"],
                After::Continues,
            ),
        ),
        case(
            "args-text",
            frame_of(&map(vec![
                ("id", n(1)),
                ("op", t("pool.show")),
                ("args", t("default")),
            ])),
            Stage::Parse,
            err(
                Some(1),
                "invalid_argument",
                &["\"args\" has the wrong type"],
                After::Continues,
            ),
        ),
    ];
    for (tag, op) in [
        ("unknown", "share.explode"),
        ("empty", ""),
        ("uppercase", "HELLO"),
        ("nul", "hello\0"),
        ("newline", "hello\nshare.delete"),
        ("path", "../../etc/passwd"),
    ] {
        cases.push(case(
            &format!("op-{tag}"),
            frame_of(&req(1, op, vec![])),
            Stage::Parse,
            err(Some(1), "unsupported", &["unknown op"], After::Continues),
        ));
    }
    cases.push(case(
        "op-10000-chars",
        frame_of(&req(1, &"x".repeat(10_000), vec![])),
        Stage::Parse,
        err(
            Some(1),
            "unsupported",
            &["unknown op", "xxxx"],
            After::Continues,
        ),
    ));
    cases
}

/// Framing, CBOR and envelope cases.
pub fn cases() -> Vec<Case> {
    let mut all = framing();
    all.extend(huge_and_deep());
    all.extend(envelope());
    all
}
