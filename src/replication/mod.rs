//! Replication between shelf nodes: the send stream's format ([`format`], pure and
//! versioned) and the diff of two snapshots' extent maps ([`diff`], pure). The engine's
//! `snapshot.send` and `snapshot.receive.*` (src/engine/send.rs, src/engine/receive.rs)
//! ask the pool for the extents (FIEMAP maps compared on a file pool, `thin_delta` on an
//! LVM thin pool: src/pool/lvm/thin.rs) and move the bytes.
//! docs/replication.md describes the format, the costs and the failure behaviour.

pub mod diff;
pub mod format;
