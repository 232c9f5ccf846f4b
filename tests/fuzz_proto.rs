//! Fuzzing the wire: arbitrary bytes, byte-level mutations of corpus frames and
//! structure-aware mutations of valid requests go through the frame reader, the CBOR
//! decoder and the request parser exactly as shelfd runs them (`src/server/conn.rs`).
//!
//! Properties: nothing panics; every failure is a typed error whose message is non-empty
//! and bounded; an error reply for it encodes; a valid request round-trips. The corpus in
//! `tests/corpus/` (see its README) is replayed on every run.
//!
//! Longer runs: `PROPTEST_CASES=100000 cargo test --release --test fuzz_proto`.

mod catalogue;

use std::path::{Path, PathBuf};

use catalogue::{Case, Expect, Stage, MAX_FRAME};
use ciborium::Value;
use proptest::prelude::*;
use shelf::proto::frame::{self, FrameError};
use shelf::proto::{encode_reply, parse_request, ArgsError, Envelope, ErrorCode, Reply};

/// Longest error message the decoder or parser may produce (bytes).
const MESSAGE_BOUND: usize = 512;
/// Catalogue cases larger than this are not stored in the corpus (they are generated).
const CORPUS_MAX: usize = 64 << 10;

/// What the server does with one frame of a stream.
#[derive(Debug)]
enum Outcome {
    /// Oversized header: error reply with id null, connection closed.
    TooLarge(FrameError),
    /// The stream ended inside a frame: no reply, connection closed.
    Truncated,
    /// Not one CBOR item: error reply with id null, next frame.
    Decode(FrameError),
    /// Not a valid request: error reply (id when known), next frame.
    Parse(ArgsError),
    /// A request for the engine.
    Accepted(Envelope),
}

/// Run a byte stream through the server's reading path; one outcome per frame.
fn run_stream(bytes: &[u8]) -> Vec<Outcome> {
    let mut r = bytes;
    let mut out = Vec::new();
    loop {
        let body = match frame::read_frame_blocking(&mut r, MAX_FRAME) {
            Ok(None) => return out,
            Ok(Some(body)) => body,
            Err(e @ FrameError::TooLarge { .. }) => {
                out.push(Outcome::TooLarge(e));
                return out;
            }
            Err(FrameError::Truncated { .. }) => {
                out.push(Outcome::Truncated);
                return out;
            }
            Err(e) => panic!("reading from a slice failed unexpectedly: {e}"),
        };
        out.push(match frame::decode_body(&body) {
            Err(e) => Outcome::Decode(e),
            Ok(v) => match parse_request(v) {
                Ok(env) => Outcome::Accepted(env),
                Err(e) => Outcome::Parse(e),
            },
        });
    }
}

/// The properties every outcome must have.
fn check(o: &Outcome) -> Result<(), TestCaseError> {
    let message = match o {
        Outcome::TooLarge(e) | Outcome::Decode(e) => e.to_string(),
        Outcome::Parse(e) => e.message.clone(),
        Outcome::Truncated | Outcome::Accepted(_) => return Ok(()),
    };
    prop_assert!(!message.trim().is_empty(), "empty message for {o:?}");
    prop_assert!(
        message.len() <= MESSAGE_BOUND,
        "message of {} bytes: {}",
        message.len(),
        message.chars().take(200).collect::<String>()
    );
    let reply = Reply {
        id: match o {
            Outcome::Parse(e) => e.id,
            _ => None,
        },
        result: Err((ErrorCode::InvalidArgument, message)),
    };
    let encoded = encode_reply(reply);
    prop_assert!(encoded.len() <= MESSAGE_BOUND + 64);
    Ok(())
}

fn check_stream(bytes: &[u8]) -> Result<Vec<Outcome>, TestCaseError> {
    let outcomes = run_stream(bytes);
    for o in &outcomes {
        check(o)?;
    }
    Ok(outcomes)
}

/// The outcome of a catalogue case must be the stage it documents.
fn check_case(c: &Case) {
    let outcomes = check_stream(&c.bytes).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    assert_eq!(
        outcomes.len(),
        1,
        "{}: one frame per case: {outcomes:?}",
        c.name
    );
    let o = &outcomes[0];
    let stage = match o {
        Outcome::TooLarge(_) => Stage::Header,
        Outcome::Truncated => Stage::Truncated,
        Outcome::Decode(_) => Stage::Decode,
        Outcome::Parse(_) => Stage::Parse,
        Outcome::Accepted(_) => Stage::Accepted,
    };
    assert_eq!(stage, c.stage, "{}: {o:?}", c.name);
    match (o, &c.expect) {
        (Outcome::Parse(e), Expect::Error { id, code, says, .. }) => {
            assert_eq!(e.id, *id, "{}: {e:?}", c.name);
            assert_eq!(e.unknown_op, *code == "unsupported", "{}: {e:?}", c.name);
            for s in says {
                assert!(
                    e.message.contains(s),
                    "{}: {:?} lacks {s:?}",
                    c.name,
                    e.message
                );
            }
        }
        (Outcome::Decode(e) | Outcome::TooLarge(e), Expect::Error { id, says, .. }) => {
            assert_eq!(*id, None, "{}", c.name);
            let m = e.to_string();
            for s in says {
                assert!(m.contains(s), "{}: {m:?} lacks {s:?}", c.name);
            }
        }
        (Outcome::Accepted(env), Expect::Ok { id }) => assert_eq!(env.id, *id, "{}", c.name),
        (Outcome::Accepted(env), Expect::Error { id, .. }) => {
            assert_eq!(Some(env.id), *id, "{}", c.name)
        }
        (Outcome::Truncated, Expect::Nothing) => {}
        (o, e) => panic!("{}: outcome {o:?} does not fit {e:?}", c.name),
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The corpus as the catalogue and the valid requests define it: (file name, bytes).
fn generated_corpus() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = catalogue::cases()
        .into_iter()
        .filter(|c| c.bytes.len() <= CORPUS_MAX)
        .map(|c| (format!("{}.bin", c.name), c.bytes))
        .collect();
    for (name, v) in catalogue::valid_requests() {
        files.push((format!("{name}.bin"), catalogue::frame_of(&v)));
    }
    files
}

fn stored_corpus() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn catalogue_cases_stop_where_they_say() {
    let failed: Vec<String> = catalogue::cases()
        .iter()
        .filter(|c| std::panic::catch_unwind(|| check_case(c)).is_err())
        .map(|c| c.name.clone())
        .collect();
    assert!(
        failed.is_empty(),
        "cases that do not stop where they say: {failed:?}"
    );
}

#[test]
fn valid_requests_of_every_op_round_trip() {
    for (name, v) in catalogue::valid_requests() {
        let bytes = catalogue::frame_of(&v);
        let body = frame::read_frame_blocking(&mut &bytes[..], MAX_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(frame::decode_body(&body).unwrap(), v, "{name}");
        let env = parse_request(v.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            Some(&Value::Integer(env.id.into())),
            catalogue_get(&v, "id")
        );
        assert_eq!(Some(&Value::Text(env.op.clone())), catalogue_get(&v, "op"));
    }
}

fn catalogue_get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    shelf::client::get(v, key)
}

/// Every stored corpus file is replayed; catalogue files must be up to date. Set
/// `SHELF_BLESS_CORPUS=1` to (re)write the generated files.
#[test]
fn corpus_is_replayed_and_in_step_with_the_catalogue() {
    let generated = generated_corpus();
    if std::env::var_os("SHELF_BLESS_CORPUS").is_some() {
        for (name, bytes) in &generated {
            std::fs::write(corpus_dir().join(name), bytes).unwrap();
        }
    }
    let stored = stored_corpus();
    for (name, bytes) in &generated {
        let found = stored.iter().find(|(n, _)| n == name);
        assert_eq!(
            found.map(|(_, b)| b),
            Some(bytes),
            "tests/corpus/{name} is missing or stale; run with SHELF_BLESS_CORPUS=1"
        );
    }
    for (name, bytes) in &stored {
        check_stream(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

// ---- strategies ------------------------------------------------------------------------

/// Any CBOR value, with the shapes that hurt: extremes, control characters, tags.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(|n| Value::Integer(n.into())),
        any::<i64>().prop_map(|n| Value::Integer(n.into())),
        prop_oneof![
            Just(0u64),
            Just(511),
            Just(512),
            Just(1 << 50),
            Just(u64::MAX)
        ]
        .prop_map(|n| Value::Integer(n.into())),
        any::<f64>().prop_map(Value::Float),
        "\\PC{0,24}".prop_map(Value::Text),
        "[a-z./\\x00\\n ,()*=-]{0,12}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner.clone()), 0..6).prop_map(Value::Map),
            (any::<u16>(), inner).prop_map(|(tag, v)| Value::Tag(tag.into(), Box::new(v))),
        ]
    })
}

/// Map keys: mostly the protocol's own, so mutations reach the argument parsers.
fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "op",
            "args",
            "name",
            "size",
            "pool",
            "sparse",
            "share",
            "snapshot",
            "metadata",
            "clients",
            "protocol",
            "driver",
            "connector",
            "host",
            "ip",
            "initiator",
            "mode",
            "recursive",
            "force",
            "export",
        ])
        .prop_map(|k| Value::Text(k.into())),
        "\\PC{0,8}".prop_map(Value::Text),
        any::<u8>().prop_map(|n| Value::Integer(n.into())),
    ]
}

/// A structural edit of a value at a random place.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    Duplicate,
    Insert(Value, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => any_value().prop_map(Edit::Replace),
        1 => Just(Edit::Remove),
        1 => Just(Edit::Duplicate),
        2 => (key(), any_value()).prop_map(|(k, v)| Edit::Insert(k, v)),
    ]
}

/// Apply `edit` to the `pick`-th node (pre-order) of `v`; returns the remaining count.
fn apply(v: &mut Value, pick: &mut usize, edit: &Edit) -> bool {
    if *pick == 0 {
        match (edit, &mut *v) {
            (Edit::Replace(new), _) => *v = new.clone(),
            (Edit::Insert(k, x), Value::Map(m)) => m.push((k.clone(), x.clone())),
            (Edit::Insert(_, x), Value::Array(a)) => a.push(x.clone()),
            (Edit::Remove, Value::Map(m)) if !m.is_empty() => {
                m.pop();
            }
            (Edit::Duplicate, Value::Map(m)) if !m.is_empty() => {
                let first = m[0].clone();
                m.push(first);
            }
            (_, other) => *other = Value::Null,
        }
        return true;
    }
    *pick -= 1;
    match v {
        Value::Map(m) => m.iter_mut().any(|(_, x)| apply(x, pick, edit)),
        Value::Array(a) => a.iter_mut().any(|x| apply(x, pick, edit)),
        Value::Tag(_, x) => apply(x, pick, edit),
        _ => false,
    }
}

fn mutated_request() -> impl Strategy<Value = Value> {
    let valid = catalogue::valid_requests();
    (
        0..valid.len(),
        proptest::collection::vec((any::<usize>(), edit()), 1..4),
    )
        .prop_map(move |(i, edits)| {
            let mut v = valid[i].1.clone();
            for (at, e) in edits {
                let mut pick = at % 24;
                apply(&mut v, &mut pick, &e);
            }
            v
        })
}

/// Byte edits of a corpus frame: overwrite, insert, delete, or re-announce the length.
fn mutated_corpus_bytes() -> impl Strategy<Value = Vec<u8>> {
    let corpus: Vec<Vec<u8>> = generated_corpus().into_iter().map(|(_, b)| b).collect();
    (
        0..corpus.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0..4u8), 1..8),
        any::<bool>(),
    )
        .prop_map(move |(i, edits, fix_length)| {
            let mut b = corpus[i].clone();
            for (at, byte, kind) in edits {
                let at = at % (b.len() + 1);
                match kind {
                    0 if at < b.len() => b[at] = byte,
                    1 => b.insert(at, byte),
                    2 if at < b.len() => {
                        b.remove(at);
                    }
                    _ if at < b.len() => b[at] ^= 1 << (byte % 8),
                    _ => b.push(byte),
                }
            }
            if fix_length && b.len() >= 4 {
                let len = (b.len() - 4) as u32;
                b[..4].copy_from_slice(&len.to_be_bytes());
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_stream(&bytes)?;
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_stream(&catalogue::frame(&body))?;
    }

    #[test]
    fn mutated_corpus_frames_never_panic(bytes in mutated_corpus_bytes()) {
        check_stream(&bytes)?;
    }

    #[test]
    fn mutated_requests_are_typed_errors_or_requests(v in mutated_request()) {
        let bytes = catalogue::frame_of(&v);
        let outcomes = check_stream(&bytes)?;
        prop_assert_eq!(outcomes.len(), 1);
        // A body we encoded ourselves is always well-formed and within the depth limit.
        prop_assert!(!matches!(outcomes[0], Outcome::Decode(_)), "{:?}", outcomes[0]);
        if let Outcome::Accepted(env) = &outcomes[0] {
            // Whatever was accepted came from a map with exactly one text "op".
            prop_assert_eq!(catalogue_get(&v, "op"), Some(&Value::Text(env.op.clone())));
        }
    }

    #[test]
    fn any_value_round_trips_through_a_frame(v in any_value()) {
        let bytes = catalogue::frame_of(&v);
        let body = frame::read_frame_blocking(&mut &bytes[..], MAX_FRAME).unwrap().unwrap();
        let back = frame::decode_body(&body);
        // NaN is not equal to itself; compare encodings instead.
        prop_assert_eq!(back.map(|b| catalogue::cbor(&b)).ok(), Some(catalogue::cbor(&v)));
    }
}
