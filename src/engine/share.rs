//! Share operations: create, list, show, resize, delete, clone. This file holds the reads
//! and the helpers the others share; each change has its own file under `share/`.

mod change;
mod clone;
mod create;
mod revert;
mod revert_exports;

pub(super) use revert::REVERT_INTENT;

use ciborium::Value;

use super::{answer, blocking, Engine};
use crate::error::{Error, Result};
use crate::model::{Share, ShareState};
use crate::proto::{Answer, ShareListArgs, ShareRef};
use crate::store;

/// Refuse work on a share that is being created or deleted.
pub(super) fn ensure_available(share: &Share) -> Result<()> {
    if share.state == ShareState::Available {
        return Ok(());
    }
    Err(Error::Busy(format!(
        "share {} is {}",
        share.name,
        share.state.as_str()
    )))
}

/// Lists up to this long are encoded on the event loop (a few tens of microseconds);
/// longer ones on the blocking pool, so that a list of 10,000 shares (milliseconds of
/// encoding) holds up no other client.
pub(super) const ON_LOOP_ITEMS: usize = 256;

/// A read's answer from a list of `items` things, built by `encode`: at once when the
/// list is short, else off the event loop.
pub(super) async fn read_list(
    items: usize,
    encode: impl FnOnce() -> std::result::Result<Answer, crate::proto::EncodeError> + Send + 'static,
) -> Result<Answer> {
    if items <= ON_LOOP_ITEMS {
        answer(encode())
    } else {
        answer(blocking(encode).await)
    }
}

impl Engine {
    /// Undo a change that failed after its intent was recorded: the volume gets the row's
    /// identity back and the intent goes. Returns the error to answer with.
    pub(super) async fn restore_identity(
        &self,
        pool: &std::sync::Arc<dyn crate::pool::Pool>,
        share: &Share,
        intent: i64,
        cause: Error,
    ) -> Error {
        let (p, s) = (pool.clone(), share.clone());
        let restamp = match cause {
            // Nothing was done to a planted object, and nothing is written on it now.
            Error::Tampered(_) => Ok(()),
            _ => blocking(move || p.stamp(&s)).await,
        };
        let cleared = self
            .store
            .write(move |c| store::delete_intent(c, intent))
            .await;
        match restamp.and(cleared) {
            Ok(()) => cause,
            Err(e) => Error::rollback(cause, e),
        }
    }

    /// `share.list`: the shares matching the filter, from the store's index (no trip to the
    /// database thread; the index holds every acknowledged write).
    pub(super) async fn list_shares(&self, a: ShareListArgs) -> Result<Answer> {
        let shares =
            self.store
                .index()
                .list_shares(a.pool.as_deref(), a.name.as_deref(), a.id.as_deref());
        read_list(shares.len(), move || Answer::list(&shares)).await
    }

    /// `share.show`: the share, with `device`, where its volume is on the appliance (file
    /// or block device), for local users such as the Ganeti provider, and `allocated`, the
    /// bytes really allocated to its volume (super::allocation); both absent while the
    /// share's pool is not configured, `allocated` also while its volume is not there or
    /// its figure cannot be read.
    pub(super) async fn show_share(&self, a: ShareRef) -> Result<Answer> {
        let share = self.store.index().find_share(&a.share, a.pool.as_deref())?;
        let shown = answer(Answer::read(&share))?;
        let Ok(pool) = self.pool(&share.pool) else {
            return Ok(shown);
        };
        let shown = shown.with(
            "device",
            Value::Text(pool.volume_path(&share.id).display().to_string()),
        );
        // A figure that cannot be read (lvs failing) leaves the key out: the share is
        // still shown.
        let allocated = self.share_allocated(&pool, &share.id).await;
        Ok(match allocated {
            Ok(Some(bytes)) => shown.with("allocated", Value::Integer(bytes.into())),
            Ok(None) => shown,
            Err(e) => {
                log::warn!("share {}: allocation unknown: {e}", share.name);
                shown
            }
        })
    }

    /// Resolve a share reference to its id (for locking), from the index.
    pub(super) async fn share_id(&self, reference: &str, pool: Option<&str>) -> Result<String> {
        Ok(self.store.index().find_share(reference, pool)?.id.clone())
    }

    /// Resolve a share reference to its id (for locking) and its pool (which never
    /// changes), from the index.
    pub(super) async fn share_id_and_pool(
        &self,
        reference: &str,
        pool: Option<&str>,
    ) -> Result<(String, String)> {
        let share = self.store.index().find_share(reference, pool)?;
        Ok((share.id.clone(), share.pool.clone()))
    }

    /// The share with this id, re-read under its lock (from the index, which holds every
    /// committed write: the lock holder's own ones included).
    pub(super) async fn share_by_id(&self, id: &str) -> Result<Share> {
        self.store
            .index()
            .get_share(id)
            .map(|s| (*s).clone())
            .ok_or_else(|| Error::NotFound(format!("share {id} was deleted meanwhile")))
    }
}
