//! Share operations: create, list, show, resize, delete, clone. This file holds the reads
//! and the helpers the others share; each change has its own file under `share/`.

mod change;
mod clone;
mod create;
mod revert;

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

    /// `share.list`: the shares matching the filter.
    pub(super) async fn list_shares(&self, a: ShareListArgs) -> Result<Vec<Share>> {
        self.store
            .call(move |c| {
                store::list_shares(c, a.pool.as_deref(), a.name.as_deref(), a.id.as_deref())
            })
            .await
    }

    /// `share.show`: the share, with `device`, where its volume is on the appliance (file
    /// or block device), for local users such as the Ganeti provider, and `allocated`, the
    /// bytes really allocated to its volume (super::allocation); both absent while the
    /// share's pool is not configured, `allocated` also while its volume is not there or
    /// its figure cannot be read.
    pub(super) async fn show_share(&self, a: ShareRef) -> Result<Answer> {
        let share = self
            .store
            .call(move |c| store::find_share(c, &a.share, a.pool.as_deref()))
            .await?;
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

    /// Resolve a share reference to its id (for locking).
    pub(super) async fn share_id(&self, reference: &str, pool: Option<&str>) -> Result<String> {
        let (r, p) = (reference.to_string(), pool.map(str::to_string));
        Ok(self
            .store
            .call(move |c| store::find_share(c, &r, p.as_deref()))
            .await?
            .id)
    }

    /// The share with this id, re-read under its lock.
    pub(super) async fn share_by_id(&self, id: &str) -> Result<Share> {
        let id = id.to_string();
        self.store
            .call(move |c| {
                store::get_share(c, &id)?
                    .ok_or_else(|| Error::NotFound(format!("share {id} was deleted meanwhile")))
            })
            .await
    }
}
