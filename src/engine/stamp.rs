//! The record of a share's exports and attachments on its volume (`trusted.shelf.exports`,
//! or an LVM tag), written after every change to them so that `shelfd recover
//! --rebuild-db` can bring them back.

use serde::{Deserialize, Serialize};

use crate::model::{Attachment, Export, Share, ShareState};
use crate::store;

/// The exports and attachments a share's volume carries (`trusted.shelf.exports`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StampedExports {
    /// The share's exports, each with its CHAP secret (in `trusted.shelf.exports`, which
    /// only CAP_SYS_ADMIN reads: no NFS client of the share sees it).
    pub exports: Vec<StampedExport>,
    /// The share's attachments.
    pub attachments: Vec<Attachment>,
}

/// One stamped export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StampedExport {
    /// The export.
    pub export: Export,
    /// Its CHAP secret.
    pub chap_secret: Option<String>,
}

impl super::Engine {
    /// Record a share's exports and attachments on its volume, after a change that is
    /// already committed (a detach, an export removed with its share, recovery). A failure
    /// is logged: `verify` reports the drift.
    pub(super) async fn stamp_exports(&self, share: &Share) {
        if let Err(e) = self.try_stamp_exports(share, None).await {
            log::warn!(
                "share {}: could not record its exports on the volume: {e}",
                share.name
            );
        }
    }

    /// Record a share's `available` exports (all but `except`, an export about to be
    /// removed) and their attachments on its volume. A change that grants or revokes access
    /// calls this and is refused when it fails: a record that disagrees with the database
    /// would let `shelfd recover --rebuild-db` bring back access that was revoked.
    pub(super) async fn try_stamp_exports(
        &self,
        share: &Share,
        except: Option<&str>,
    ) -> crate::error::Result<()> {
        let json = self.exports_record(share, except).await?;
        self.stamp_record(share, json).await
    }

    /// Write `json` (an [`exports_record_of`]) as the share's exports record on its volume.
    pub(super) async fn stamp_record(
        &self,
        share: &Share,
        json: String,
    ) -> crate::error::Result<()> {
        let pool = self.pool(&share.pool)?;
        let id = share.id.clone();
        super::blocking(move || pool.stamp_exports(&id, &json)).await
    }

    /// The record of a share's `available` exports (all but `except`) and their
    /// attachments, as the database has them, in the form [`StampedExports`] stamps it.
    pub(super) async fn exports_record(
        &self,
        share: &Share,
        except: Option<&str>,
    ) -> crate::error::Result<String> {
        let (sid, except) = (share.id.clone(), except.map(str::to_string));
        self.store
            .call(move |c| read_exports_record(c, &sid, except.as_deref()))
            .await
    }
}

/// The exports record of share `share_id` (all its `available` exports but `except`, and
/// their attachments), read in `c`: inside a transaction, as of its commit.
pub(super) fn read_exports_record(
    c: &rusqlite::Connection,
    share_id: &str,
    except: Option<&str>,
) -> crate::error::Result<String> {
    let exports = store::list_exports(c, Some(share_id), None)?;
    let attachments = store::list_attachments(c, Some(share_id))?;
    Ok(exports_record_of(exports, attachments, except))
}

/// The exports record of a share whose exports and attachments are these (read under the
/// share's lock): its `available` exports but `except`, with their CHAP secrets, and the
/// attachments over their protocols, as JSON.
pub(super) fn exports_record_of(
    exports: Vec<store::ExportRow>,
    attachments: Vec<Attachment>,
    except: Option<&str>,
) -> String {
    let exports: Vec<StampedExport> = exports
        .into_iter()
        .filter(|r| r.export.state == ShareState::Available)
        .filter(|r| Some(r.export.id.as_str()) != except)
        .map(|r| StampedExport {
            export: r.export,
            chap_secret: r.chap_secret,
        })
        .collect();
    let attachments = attachments
        .into_iter()
        .filter(|a| exports.iter().any(|x| x.export.protocol == a.protocol))
        .collect();
    serde_json::to_string(&StampedExports {
        exports,
        attachments,
    })
    .expect("exports serialise")
}
