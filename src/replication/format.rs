//! The send stream, version 1: what `snapshot.send` produces and `snapshot.receive.*`
//! consumes (docs/replication.md §2 is the normative description).
//!
//! ```text
//! preamble  "SHELFSND" · version u16 · flags u16 (0) · header_len u32
//! header    size u64 · created_at i64 · extent_count u32 ·
//!           snapshot_id · snapshot_name · share_id · share_name · node · base ·
//!           [node_id]
//!           (each text: u16 length, UTF-8; node and base empty when absent; node_id
//!           absent in streams of senders before it, so a reader takes both forms)
//! extents   extent_count × (kind u8: 1 data, 2 hole · offset u64 · length u64)
//! data      the bytes of every data extent, in extent order
//! trailer   "SHELFEND" · SHA-256 of every byte before the trailer
//! ```
//! All integers big-endian. Extents are sorted, non-empty, non-overlapping and within
//! `size`; a hole extent means "this range reads as zeros" (the receiver punches it).
//!
//! Input trust: a stream arrives from another node through an admin's pipe, so the
//! [`Decoder`] treats every byte as hostile: the header is bounded ([`MAX_HEADER`]), the
//! extent table too ([`MAX_EXTENTS`], 24 bytes of memory each), and each way a stream can
//! be wrong has its own [`StreamError`]. Memory is bounded by those two tables; data is
//! passed through in the caller's pieces. Pure: no I/O.

use sha2::{Digest, Sha256};

use crate::model::NodeId;

/// The stream's first eight bytes.
pub const MAGIC: &[u8; 8] = b"SHELFSND";
/// The trailer's first eight bytes.
pub const TRAILER_MAGIC: &[u8; 8] = b"SHELFEND";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Largest header accepted, in bytes.
pub const MAX_HEADER: u32 = 16 * 1024;
/// Most extents a stream may list (the sender coalesces beyond it).
pub const MAX_EXTENTS: u32 = 262_144;
/// Longest text field of the header, in bytes.
pub const MAX_TEXT: usize = 1024;
/// Bytes of the preamble.
pub const PREAMBLE_LEN: usize = 16;
/// Bytes of one extent entry.
pub const EXTENT_LEN: usize = 17;
/// Bytes of the trailer.
pub const TRAILER_LEN: usize = 40;

/// Whether an extent carries data or is a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Its bytes follow in the data section.
    Data,
    /// It reads as zeros: no bytes follow, the receiver deallocates the range.
    Hole,
}

/// One range of the volume the stream changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Data or hole.
    pub kind: ExtentKind,
    /// Where it starts, in bytes.
    pub offset: u64,
    /// How long it is, in bytes (never 0).
    pub len: u64,
}

impl Extent {
    /// A data extent.
    pub fn data(offset: u64, len: u64) -> Extent {
        Extent {
            kind: ExtentKind::Data,
            offset,
            len,
        }
    }

    /// A hole extent.
    pub fn hole(offset: u64, len: u64) -> Extent {
        Extent {
            kind: ExtentKind::Hole,
            offset,
            len,
        }
    }

    /// Where it ends (exclusive).
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// What the stream says about the snapshot it carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// The snapshot's size in bytes.
    pub size: u64,
    /// Its creation time on the sender (Unix seconds).
    pub created_at: i64,
    /// Its id on the sender (kept by the receiver).
    pub snapshot_id: String,
    /// Its name.
    pub snapshot_name: String,
    /// The id of the share it was taken from, on the sender.
    pub share_id: String,
    /// That share's name.
    pub share_name: String,
    /// The sender's node name (its `node_name`, by default its host name), when known.
    pub node: Option<String>,
    /// For an incremental stream, the id of the base snapshot it applies onto.
    pub base: Option<String>,
    /// The sender's node id (`hello`'s `node.id`); `None` in a stream from a sender that
    /// did not write it. Written after `base`, the header's last field.
    pub node_id: Option<NodeId>,
}

/// Every way a stream can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The first bytes are not [`MAGIC`].
    #[error("not a shelf send stream (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("stream format version {0} is not supported (this shelf reads version 1)")]
    Version(u16),
    /// Flags this build does not know.
    #[error("stream flags {0:#x} are not supported")]
    Flags(u16),
    /// The announced header is larger than [`MAX_HEADER`].
    #[error("stream header of {0} bytes is over the limit of {MAX_HEADER}")]
    HeaderTooLarge(u32),
    /// The header's fields do not parse.
    #[error("malformed stream header: {0}")]
    HeaderMalformed(String),
    /// More extents than [`MAX_EXTENTS`].
    #[error("stream lists {0} extents, over the limit of {MAX_EXTENTS}")]
    TooManyExtents(u32),
    /// An extent of an unknown kind.
    #[error("extent {index} has unknown kind {kind}")]
    ExtentKind {
        /// Its position in the table.
        index: u32,
        /// The kind byte.
        kind: u8,
    },
    /// An extent of length 0.
    #[error("extent {index} is empty")]
    ExtentEmpty {
        /// Its position in the table.
        index: u32,
    },
    /// An extent that starts before the previous one ends.
    #[error("extent {index} overlaps or precedes the previous one")]
    ExtentOrder {
        /// Its position in the table.
        index: u32,
    },
    /// An extent past the snapshot's size.
    #[error("extent {index} ends past the snapshot's size")]
    ExtentBounds {
        /// Its position in the table.
        index: u32,
    },
    /// The trailer does not start with [`TRAILER_MAGIC`].
    #[error("stream trailer is missing or damaged (bad trailer magic)")]
    TrailerMagic,
    /// The checksum does not match the bytes.
    #[error("stream checksum mismatch: the stream was corrupted")]
    Checksum,
    /// Bytes after the trailer.
    #[error("bytes after the end of the stream")]
    TrailingBytes,
    /// The stream ended before its trailer.
    #[error("the stream is truncated ({0})")]
    Truncated(&'static str),
}

/// The preamble, header and extent table of a stream, as the encoder writes them.
pub fn encode_head(h: &Header, extents: &[Extent]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&h.size.to_be_bytes());
    body.extend_from_slice(&h.created_at.to_be_bytes());
    body.extend_from_slice(&(extents.len() as u32).to_be_bytes());
    for t in [
        h.snapshot_id.as_str(),
        &h.snapshot_name,
        &h.share_id,
        &h.share_name,
        h.node.as_deref().unwrap_or(""),
        h.base.as_deref().unwrap_or(""),
    ]
    .into_iter()
    .chain(h.node_id.as_ref().map(NodeId::as_str))
    {
        // Every field is a validated name or an id, far below the limit; one that were
        // not is cut at a character boundary, so the field stays UTF-8.
        let cut = (0..=t.len().min(MAX_TEXT))
            .rev()
            .find(|&i| t.is_char_boundary(i))
            .unwrap_or(0);
        let b = &t.as_bytes()[..cut];
        body.extend_from_slice(&(b.len() as u16).to_be_bytes());
        body.extend_from_slice(b);
    }
    let mut out = Vec::with_capacity(PREAMBLE_LEN + body.len() + extents.len() * EXTENT_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    for e in extents {
        out.push(match e.kind {
            ExtentKind::Data => 1,
            ExtentKind::Hole => 2,
        });
        out.extend_from_slice(&e.offset.to_be_bytes());
        out.extend_from_slice(&e.len.to_be_bytes());
    }
    out
}

/// The bytes a stream with these extents has in total (what a sender announces).
pub fn stream_len(h: &Header, extents: &[Extent]) -> u64 {
    let data: u64 = extents
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.len)
        .sum();
    encode_head(h, extents).len() as u64 + data + TRAILER_LEN as u64
}

/// The encoder's running checksum: feed it every byte written before the trailer.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    hash: Sha256,
}

impl Encoder {
    /// Start a stream: the encoder and the bytes to write first.
    pub fn start(h: &Header, extents: &[Extent]) -> (Encoder, Vec<u8>) {
        let head = encode_head(h, extents);
        let mut e = Encoder::default();
        e.hash.update(&head);
        (e, head)
    }

    /// Account for data bytes written (in extent order).
    pub fn data(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
    }

    /// The trailer that ends the stream.
    pub fn finish(self) -> Vec<u8> {
        let mut out = TRAILER_MAGIC.to_vec();
        out.extend_from_slice(&self.hash.finalize());
        out
    }
}

/// What the decoder hands its caller, in stream order.
#[derive(Debug)]
pub enum Event<'a> {
    /// The header and the whole, checked extent table (before any data).
    Head(&'a Header, &'a [Extent]),
    /// Bytes of the volume at `offset` (a piece of a data extent).
    Data {
        /// Where they go.
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
}

/// The decoder's failure: the stream's, or the caller's own (`E`) from handling an event.
#[derive(Debug)]
pub enum FeedError<E> {
    /// The stream is wrong.
    Stream(StreamError),
    /// The caller failed on an event.
    Sink(E),
}

impl<E> From<StreamError> for FeedError<E> {
    fn from(e: StreamError) -> Self {
        FeedError::Stream(e)
    }
}

#[derive(Debug)]
enum State {
    Preamble,
    Header(usize),
    Extents,
    Data { index: usize, done: u64 },
    Trailer,
    Done,
}

/// A push decoder: feed it the stream in pieces of any size.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    buf: Vec<u8>,
    header: Header,
    count: u32,
    extents: Vec<Extent>,
    hash: Sha256,
    consumed: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Decoder {
        Decoder {
            state: State::Preamble,
            buf: Vec::new(),
            header: Header::default(),
            count: 0,
            extents: Vec::new(),
            hash: Sha256::new(),
            consumed: 0,
        }
    }

    /// The header, once decoded.
    pub fn header(&self) -> Option<&Header> {
        match self.state {
            State::Preamble | State::Header(_) | State::Extents => None,
            _ => Some(&self.header),
        }
    }

    /// Bytes of the stream consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether the trailer was read and its checksum matched.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The end of the input: an error unless the whole stream, trailer included, was read.
    pub fn finish(&self) -> Result<(), StreamError> {
        match self.state {
            State::Done => Ok(()),
            State::Preamble => Err(StreamError::Truncated("in the preamble")),
            State::Header(_) => Err(StreamError::Truncated("in the header")),
            State::Extents => Err(StreamError::Truncated("in the extent table")),
            State::Data { .. } => Err(StreamError::Truncated("in the data")),
            State::Trailer => Err(StreamError::Truncated("in the trailer")),
        }
    }

    /// Take bytes into `self.buf` until it holds `want`; the bytes taken are hashed.
    fn fill(&mut self, input: &mut &[u8], want: usize, hash: bool) -> bool {
        let take = (want - self.buf.len()).min(input.len());
        let (now, rest) = input.split_at(take);
        if hash {
            self.hash.update(now);
        }
        self.buf.extend_from_slice(now);
        self.consumed += take as u64;
        *input = rest;
        self.buf.len() == want
    }

    /// Decode `input`, the stream's next bytes, calling `sink` for each event.
    pub fn feed<E>(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        self.feed_some(input, sink, false).map(|_| ())
    }

    /// Like [`Decoder::feed`], but stop right after the [`Event::Head`] (so the caller can
    /// prepare for the data): returns how many bytes of `input` were taken.
    pub fn feed_until_head<E>(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<usize, FeedError<E>> {
        self.feed_some(input, sink, true)
    }

    fn feed_some<E>(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
        stop_at_head: bool,
    ) -> Result<usize, FeedError<E>> {
        let total = input.len();
        loop {
            let headed = !matches!(
                self.state,
                State::Preamble | State::Header(_) | State::Extents
            );
            match self.state {
                State::Done if !input.is_empty() => return Err(StreamError::TrailingBytes.into()),
                _ if input.is_empty() || (stop_at_head && headed) => return Ok(total - input.len()),
                State::Preamble => {
                    if self.fill(&mut input, PREAMBLE_LEN, true) {
                        let len = self.preamble()?;
                        self.buf.clear();
                        self.state = State::Header(len);
                    }
                }
                State::Header(len) => {
                    if self.fill(&mut input, len, true) {
                        let (header, count) = parse_header(&self.buf)?;
                        self.header = header;
                        self.count = count;
                        self.buf.clear();
                        self.state = State::Extents;
                        if count == 0 {
                            self.start_data(sink)?;
                        }
                    }
                }
                State::Extents => {
                    if self.fill(&mut input, EXTENT_LEN, true) {
                        self.push_extent()?;
                        self.buf.clear();
                        if self.extents.len() as u32 == self.count {
                            self.start_data(sink)?;
                        }
                    }
                }
                State::Data { index, done } => {
                    let e = self.extents[index];
                    let take = (e.len - done).min(input.len() as u64) as usize;
                    let (now, rest) = input.split_at(take);
                    self.hash.update(now);
                    self.consumed += take as u64;
                    input = rest;
                    sink(Event::Data {
                        offset: e.offset + done,
                        bytes: now,
                    })
                    .map_err(FeedError::Sink)?;
                    self.state = if done + take as u64 == e.len {
                        self.next_data(index + 1)
                    } else {
                        State::Data {
                            index,
                            done: done + take as u64,
                        }
                    };
                }
                State::Trailer => {
                    if self.fill(&mut input, TRAILER_LEN, false) {
                        if &self.buf[..8] != TRAILER_MAGIC {
                            return Err(StreamError::TrailerMagic.into());
                        }
                        let digest = std::mem::take(&mut self.hash).finalize();
                        if self.buf[8..] != digest[..] {
                            return Err(StreamError::Checksum.into());
                        }
                        self.buf = Vec::new();
                        self.state = State::Done;
                    }
                }
                State::Done => return Ok(total - input.len()),
            }
        }
    }

    fn preamble(&self) -> Result<usize, StreamError> {
        let b = &self.buf;
        if &b[..8] != MAGIC {
            return Err(StreamError::BadMagic);
        }
        let version = u16::from_be_bytes([b[8], b[9]]);
        if version != VERSION {
            return Err(StreamError::Version(version));
        }
        let flags = u16::from_be_bytes([b[10], b[11]]);
        if flags != 0 {
            return Err(StreamError::Flags(flags));
        }
        let len = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
        if len > MAX_HEADER {
            return Err(StreamError::HeaderTooLarge(len));
        }
        Ok(len as usize)
    }

    fn push_extent(&mut self) -> Result<(), StreamError> {
        let index = self.extents.len() as u32;
        let b = &self.buf;
        let kind = match b[0] {
            1 => ExtentKind::Data,
            2 => ExtentKind::Hole,
            kind => return Err(StreamError::ExtentKind { index, kind }),
        };
        let offset = u64::from_be_bytes(b[1..9].try_into().expect("8 bytes"));
        let len = u64::from_be_bytes(b[9..17].try_into().expect("8 bytes"));
        if len == 0 {
            return Err(StreamError::ExtentEmpty { index });
        }
        let prev_end = self.extents.last().map(|e| e.end()).unwrap_or(0);
        if offset < prev_end {
            return Err(StreamError::ExtentOrder { index });
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.header.size => {}
            _ => return Err(StreamError::ExtentBounds { index }),
        }
        self.extents.push(Extent { kind, offset, len });
        Ok(())
    }

    fn start_data<E>(
        &mut self,
        sink: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        sink(Event::Head(&self.header, &self.extents)).map_err(FeedError::Sink)?;
        self.state = self.next_data(0);
        Ok(())
    }

    /// The state for the first data extent at or after `from`, or the trailer.
    fn next_data(&self, from: usize) -> State {
        match (from..self.extents.len()).find(|&i| self.extents[i].kind == ExtentKind::Data) {
            Some(index) => State::Data { index, done: 0 },
            None => State::Trailer,
        }
    }
}

/// Parse the header's body: the header and the extent count.
fn parse_header(b: &[u8]) -> Result<(Header, u32), StreamError> {
    let bad = |m: &str| StreamError::HeaderMalformed(m.to_string());
    if b.len() < 20 {
        return Err(bad("shorter than its fixed fields"));
    }
    let size = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
    let created_at = i64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
    let count = u32::from_be_bytes(b[16..20].try_into().expect("4 bytes"));
    if count > MAX_EXTENTS {
        return Err(StreamError::TooManyExtents(count));
    }
    let mut rest = &b[20..];
    let mut texts = Vec::with_capacity(6);
    for name in [
        "snapshot_id",
        "snapshot_name",
        "share_id",
        "share_name",
        "node",
        "base",
    ] {
        texts.push(take_text(&mut rest, name)?);
    }
    // The one optional field: a sender before it ends the header after base.
    let node_id = if rest.is_empty() {
        None
    } else {
        let t = take_text(&mut rest, "node_id")?;
        Some(NodeId::parse(&t).map_err(|e| bad(&format!("node_id: {e}")))?)
    };
    if !rest.is_empty() {
        return Err(bad("bytes after the last field"));
    }
    let opt = |t: String| (!t.is_empty()).then_some(t);
    let mut t = texts.into_iter();
    let mut next = || t.next().expect("six fields");
    let h = Header {
        size,
        created_at,
        snapshot_id: next(),
        snapshot_name: next(),
        share_id: next(),
        share_name: next(),
        node: opt(next()),
        base: opt(next()),
        node_id,
    };
    for (name, v) in [
        ("snapshot_id", &h.snapshot_id),
        ("snapshot_name", &h.snapshot_name),
    ] {
        if v.is_empty() {
            return Err(bad(&format!("{name} is empty")));
        }
    }
    Ok((h, count))
}

/// One text field (u16 length, UTF-8) off the front of `rest`.
fn take_text(rest: &mut &[u8], name: &str) -> Result<String, StreamError> {
    let bad = |m: String| StreamError::HeaderMalformed(m);
    if rest.len() < 2 {
        return Err(bad(format!("{name} is cut off")));
    }
    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    if len > MAX_TEXT || rest.len() < 2 + len {
        return Err(bad(format!("{name} is too long or cut off")));
    }
    let t = std::str::from_utf8(&rest[2..2 + len])
        .map_err(|_| bad(format!("{name} is not UTF-8")))?
        .to_string();
    *rest = &rest[2 + len..];
    Ok(t)
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
