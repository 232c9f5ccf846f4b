//! `snapshot.send`: a snapshot as a send stream (docs/replication.md).

use super::Engine;
use crate::error::{Error, Result};
use crate::proto::{Answer, SnapshotSendArgs};

impl Engine {
    /// `snapshot.send`: open a byte stream of the snapshot, incremental from `from`.
    pub(super) async fn send_snapshot(&self, a: SnapshotSendArgs) -> Result<Answer> {
        let _ = a;
        Err(Error::Unsupported(
            "snapshot.send: the engine side lands after the stream plumbing".into(),
        ))
    }
}
