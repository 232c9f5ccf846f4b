//! `share.set_metadata`: change a share's metadata after creation.
//!
//! The metadata is part of the identity stamped on the volume (`trusted.shelf.metadata`), so
//! that `shelfd recover --rebuild-db` brings it back; a change therefore rewrites both the
//! row and the stamp. Order, for crash safety: journal an intent, stamp the new identity,
//! then commit the row and drop the intent in one transaction. A crash before that commit
//! leaves the intent, and start-up recovery restamps the volume from the (unchanged) row:
//! a change that was never acknowledged is undone.

use std::collections::BTreeMap;

use super::share::ensure_available;
use super::{blocking, failpoint, Engine};
use crate::error::Result;
use crate::model::{self, Outcome, Share};
use crate::proto::ShareSetMetadataArgs;
use crate::store;

/// The intent journaled while a metadata change is under way.
pub(super) const SET_METADATA_INTENT: &str = "share.set_metadata";

/// The metadata after removing `remove` and then setting `set`.
fn merged(
    current: &BTreeMap<String, String>,
    remove: &[String],
    set: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut m = current.clone();
    for k in remove {
        m.remove(k);
    }
    m.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    m
}

impl Engine {
    /// `share.set_metadata`: change metadata entries and restamp the volume's identity
    /// (`Unchanged` when the entries already are as asked).
    pub(super) async fn set_share_metadata(
        &self,
        a: ShareSetMetadataArgs,
    ) -> Result<Outcome<Share>> {
        let id = self.share_id(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let share = self.share_by_id(&id).await?;
        ensure_available(&share)?;
        let metadata = merged(&share.metadata, &a.remove, &a.metadata);
        model::validate_metadata(&metadata)?;
        if metadata == share.metadata {
            return Ok(Outcome::Unchanged(share));
        }
        let updated = Share {
            metadata,
            ..share.clone()
        };
        let sid = share.id.clone();
        let intent = self
            .store
            .write(move |c| {
                store::insert_intent(c, SET_METADATA_INTENT, &sid, &serde_json::json!({}))
            })
            .await?;
        let pool = self.pool(&share.pool)?;
        let (p, s) = (pool.clone(), updated.clone());
        if let Err(cause) = blocking(move || p.stamp(&s)).await {
            // Put the old identity back (the stamp may have been partly written).
            return Err(self.restore_identity(&pool, &share, intent, cause).await);
        }
        failpoint::hit("share.set_metadata.after_stamp");
        let (sid, meta) = (updated.id.clone(), updated.metadata.clone());
        self.store
            .write(move |c| {
                store::set_share_metadata(c, &sid, &meta)?;
                store::delete_intent(c, intent)
            })
            .await?;
        log::info!(
            "share metadata changed: {} ({}), {} entries",
            updated.name,
            updated.id,
            updated.metadata.len()
        );
        Ok(Outcome::Changed(updated))
    }

    /// Start-up recovery of an interrupted metadata change: the row was not committed, so
    /// the volume gets the row's identity back.
    pub(super) async fn undo_set_metadata(&self, share_id: &str) -> Result<String> {
        let id = share_id.to_string();
        let Some(share) = self.store.call(move |c| store::get_share(c, &id)).await? else {
            return Ok(format!(
                "metadata change of vanished share {share_id} dropped"
            ));
        };
        let pool = self.pool(&share.pool)?;
        let s = share.clone();
        blocking(move || pool.stamp(&s)).await?;
        Ok(format!(
            "metadata change of share {} ({}) was never acknowledged: undone",
            share.name, share.id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_removes_then_sets() {
        let cur: BTreeMap<String, String> = [("a", "1"), ("b", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let set: BTreeMap<String, String> = [("b".to_string(), "3".to_string())].into();
        let m = merged(&cur, &["a".into(), "b".into(), "zz".into()], &set);
        assert_eq!(m, [("b".to_string(), "3".to_string())].into());
        assert_eq!(merged(&cur, &[], &BTreeMap::new()), cur);
    }
}
