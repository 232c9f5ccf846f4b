//! `snapshot.receive.*`: a send stream into a share (docs/replication.md).

use super::Engine;
use crate::error::{Error, Result};
use crate::model::Outcome;
use crate::proto::{Answer, ReceiveBeginArgs, ReceiveChunkArgs, ReceiveRef};

fn pending() -> Error {
    Error::Unsupported("snapshot.receive: the engine side is not in this build yet".into())
}

impl Engine {
    /// `snapshot.receive.begin`.
    pub(super) async fn begin_receive(&self, a: ReceiveBeginArgs) -> Result<Answer> {
        let _ = a;
        Err(pending())
    }
    /// `snapshot.receive.chunk`.
    pub(super) async fn receive_chunk(&self, a: ReceiveChunkArgs) -> Result<Answer> {
        let _ = a;
        Err(pending())
    }
    /// `snapshot.receive.finish`.
    pub(super) async fn finish_receive(&self, a: ReceiveRef) -> Result<Answer> {
        let _ = a;
        Err(pending())
    }
    /// `snapshot.receive.abort`.
    pub(super) async fn abort_receive(&self, a: ReceiveRef) -> Result<Outcome<String>> {
        let _ = a;
        Err(pending())
    }
}
