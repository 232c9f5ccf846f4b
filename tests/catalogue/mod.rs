//! The hostile-input catalogue: every bad frame, envelope and argument we know of, with
//! what shelfd must answer. Shared by `tests/hostile.rs` (which sends each case to a real
//! shelfd) and `tests/fuzz_proto.rs` (which replays each case, and the corpus written from
//! it, through the frame decoder and the request parser).
//!
//! A case is raw bytes as sent on the socket, so the same bytes go into `tests/corpus/`.
#![allow(dead_code)]

mod args;
mod frames;
mod targets;
mod valid;

use ciborium::Value;

/// The server's default `max_frame_size` (1 MiB), which the catalogue is written for.
pub const MAX_FRAME: u32 = 1 << 20;
/// The scratch filesystem the hostile test runs on (the `no_space` cases are sized
/// against it).
pub const POOL_FS_BYTES: u64 = 1 << 30;
/// Shares, snapshot and export the hostile test creates before the catalogue runs.
pub const VICTIM: &str = "victim";
/// A snapshot of [`VICTIM`].
pub const VICTIM_SNAPSHOT: &str = "snap1";
/// A preallocated share (for the resize-beyond-the-pool case).
pub const FAT: &str = "fat";
/// A share with a valid NFS and iSCSI export, made before the catalogue: what the
/// exports file and tgtd hold afterwards shows that no hostile client string got in.
pub const EXPORTED: &str = "exported";
/// The only NFS client and iSCSI initiator [`EXPORTED`] is exported to.
pub const GOOD_NFS_CLIENT: &str = "127.0.0.1";
/// See [`GOOD_NFS_CLIENT`].
pub const GOOD_INITIATOR: &str = "iqn.1993-08.org.debian:01:good";

/// Where the decoder and parser (without a server) stop on a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The header announces more than [`MAX_FRAME`]; the body is never read.
    Header,
    /// The bytes end inside the header or the body.
    Truncated,
    /// The body is not one well-formed CBOR item within the limits.
    Decode,
    /// The item is not a valid request (envelope or arguments).
    Parse,
    /// The request parses; the engine decides.
    Accepted,
}

/// What happens to the connection after the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// The connection still answers a `hello`.
    Continues,
    /// The server closes it (end of stream, or `ECONNRESET` when unread bytes remain).
    Closes,
}

/// What the server must answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// No reply; the server closes the connection once the client shuts down its side.
    Nothing,
    /// An error reply.
    Error {
        /// The reply's id (`None`: sent as null).
        id: Option<u64>,
        /// The stable code.
        code: &'static str,
        /// Fragments the message must contain (it must say what is wrong).
        says: Vec<&'static str>,
        /// Whether the connection stays usable.
        after: After,
    },
    /// Success (for hostile-looking input that is valid, e.g. indefinite-length items).
    Ok {
        /// The reply's id.
        id: u64,
    },
}

/// One hostile input.
#[derive(Debug, Clone)]
pub struct Case {
    /// A descriptive, file-name-safe name (`tests/corpus/<name>.bin`).
    pub name: String,
    /// The bytes sent on the socket.
    pub bytes: Vec<u8>,
    /// Where the offline decoder/parser stops.
    pub stage: Stage,
    /// What the server answers.
    pub expect: Expect,
}

/// Every case, frames first.
pub fn cases() -> Vec<Case> {
    let mut all = frames::cases();
    all.extend(args::cases());
    let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "case names must be unique");
    all
}

/// Valid requests of every operation (the corpus seeds the fuzzer mutates).
pub fn valid_requests() -> Vec<(String, Value)> {
    valid::valid_requests()
}

// ---- builders ------------------------------------------------------------------------

/// Text value.
pub fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Unsigned integer value.
pub fn n(x: u64) -> Value {
    Value::Integer(x.into())
}

/// Map with text keys.
pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (t(k), v)).collect())
}

/// The envelope `{id, op, args}`.
pub fn req(id: u64, op: &str, args: Vec<(&str, Value)>) -> Value {
    map(vec![("id", n(id)), ("op", t(op)), ("args", map(args))])
}

/// CBOR encoding of a value.
pub fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).expect("encode");
    out
}

/// A frame around a body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A frame holding a value.
pub fn frame_of(v: &Value) -> Vec<u8> {
    frame(&cbor(v))
}

/// An error expectation.
pub fn err(id: Option<u64>, code: &'static str, says: &[&'static str], after: After) -> Expect {
    Expect::Error {
        id,
        code,
        says: says.to_vec(),
        after,
    }
}

/// A case.
pub fn case(name: &str, bytes: Vec<u8>, stage: Stage, expect: Expect) -> Case {
    Case {
        name: name.to_string(),
        bytes,
        stage,
        expect,
    }
}

/// A request frame refused by the parser with `invalid_argument` and the request's id 1.
pub fn bad_args(name: &str, op: &str, args: Vec<(&str, Value)>, says: &[&'static str]) -> Case {
    case(
        name,
        frame_of(&req(1, op, args)),
        Stage::Parse,
        err(Some(1), "invalid_argument", says, After::Continues),
    )
}

/// A request frame that parses, answered by the engine with `code`.
pub fn engine_err(
    name: &str,
    op: &str,
    args: Vec<(&str, Value)>,
    code: &'static str,
    says: &[&'static str],
) -> Case {
    case(
        name,
        frame_of(&req(1, op, args)),
        Stage::Accepted,
        err(Some(1), code, says, After::Continues),
    )
}
