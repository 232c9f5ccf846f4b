//! Replication between shelf nodes: the send stream's format ([`format`], pure and
//! versioned) and the diff of two snapshots' extent maps ([`diff`], pure). The engine's
//! `snapshot.send` and `snapshot.receive.*` (src/engine/send.rs, src/engine/receive.rs)
//! read the maps through the pool (FIEMAP on a file pool) and move the bytes.
//! docs/replication.md describes the format, the costs and the failure behaviour.

pub mod diff;
pub mod format;
