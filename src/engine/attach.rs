//! The attach contract (Cinder's initialize_connection / terminate_connection): attach adds
//! exactly one initiator or client to a share's export and returns `connection_info`;
//! detach removes exactly that one. Both are idempotent.

use ciborium::Value;

use super::{answer, failpoint, Engine};
use crate::error::{Error, Result};
use crate::model::{self, Access, Attachment, Outcome, Protocol, Share};
use crate::proto::{Answer, AttachArgs, ShareFilter};
use crate::store::{self, now, AuditSlot, ExportRow};

/// The journal's name for an unacknowledged attach (its object is the attachment id):
/// recovery undoes it.
pub(super) const ATTACH_INTENT: &str = "share.attach";

/// The journal's name for a detach under way (its object is the attachment id): recovery
/// finishes it.
pub(super) const DETACH_INTENT: &str = "share.detach";
/// Journaled by a detach that revoked access while the share's volume was tampered (its
/// exports record could not be written): start-up writes the record from the database
/// again, until it succeeds, so that the genuine volume, once put back, does not carry
/// the revoked attachment into a `recover --rebuild-db` (docs/security.md §5).
pub(super) const RESTAMP_INTENT: &str = "share.restamp_exports";

impl Engine {
    /// `connection_info` in Cinder's shape for an attach of `client` through `row`.
    fn connection_info(
        &self,
        share: &Share,
        row: &ExportRow,
        client: &str,
        mode: Access,
    ) -> Result<Value> {
        let e = &row.export;
        let exporter = self.exporter(e.driver);
        let client_path = exporter.client_path(e);
        let discard = exporter.discards(&self.spec_for(row, share)?);
        self.protocol(e.protocol)
            .connection_info(&crate::export::protocol::Attaching {
                share_id: &share.id,
                export: e,
                chap_secret: row.chap_secret.as_deref(),
                mode,
                client,
                client_path: &client_path,
                discard,
            })
    }

    /// The share `id`, re-read under its lock, with its exports and attachments: one store
    /// call. They stay as read while the lock is held (every change to a share's exports
    /// and attachments holds it).
    async fn share_access(&self, id: &str) -> Result<(Share, Vec<ExportRow>, Vec<Attachment>)> {
        let id = id.to_string();
        self.store
            .call(move |c| {
                let share = store::get_share(c, &id)?
                    .ok_or_else(|| Error::NotFound(format!("share {id} was deleted meanwhile")))?;
                let exports = store::list_exports(c, Some(&id), None)?;
                let attachments = store::list_attachments(c, Some(&id))?;
                Ok((share, exports, attachments))
            })
            .await
    }

    /// The protocol an attach or detach is about: the one asked for, else the one
    /// [`crate::export::protocol::choose`] picks from the share's exports (`rows`) and the
    /// connector.
    fn pick_protocol(
        &self,
        share: &Share,
        asked: Option<Protocol>,
        connector: &model::Connector,
        rows: &[ExportRow],
    ) -> Result<Protocol> {
        if let Some(p) = asked {
            self.check_protocol(share, p)?;
            return Ok(p);
        }
        let existing: Vec<Protocol> = rows.iter().map(|r| r.export.protocol).collect();
        Ok(crate::export::protocol::choose(
            &existing,
            connector,
            share.layout == crate::model::Layout::Filesystem,
        ))
    }

    /// `share.attach` (Cinder's initialize_connection): admit exactly one connector's client
    /// to the share's export over the chosen protocol, journaled as an intent that start-up
    /// undoes if unacknowledged, and answer the protocol's `connection_info`. Attaching the
    /// same connector again is `changed: false` with the same answer.
    pub(super) async fn attach_share(&self, a: AttachArgs, slot: &AuditSlot) -> Result<Answer> {
        let id = self.share_id(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let (share, exports, attachments) = self.share_access(&id).await?;
        let protocol = self.pick_protocol(&share, a.protocol, &a.connector, &exports)?;
        let rules = self.protocol(protocol);
        let client = rules.connector_client(&a.connector)?;
        let mode = a.mode.unwrap_or(Access::Rw);
        rules.check_mode(mode)?;
        let mine = attachments
            .iter()
            .find(|x| x.protocol == protocol && x.client == client);
        if mine.is_none() && !share.multiattach {
            if let Some(other) = attachments.first() {
                return Err(Error::Busy(format!(
                    "share {} is single-attach and already attached to host {} ({} {})",
                    share.name,
                    other.host,
                    other.protocol.as_str(),
                    other.client
                )));
            }
        }
        if mine.is_none() {
            rules.admit(&client).await?;
        }
        let driver = rules.default_driver();
        let existing = exports.into_iter().find(|r| r.export.protocol == protocol);
        let _exports = self
            .export_guard(existing.as_ref().map_or(driver, |r| r.export.driver))
            .await;
        let row = match existing {
            Some(r) => {
                super::export::require_settled(&r, &share)?;
                r
            }
            None => {
                self.probe_driver(driver).await?;
                let none = AuditSlot::default();
                self.ensure_export(&share, protocol, driver, rules.attach_options(), &none)
                    .await?
                    .0
            }
        };
        if let Some(m) = mine {
            // The same connector again: the same answer, nothing changed.
            let info = self.connection_info(&share, &row, &client, m.mode)?;
            return answer(Answer::attached(&Outcome::AlreadyThere(m.clone()), info));
        }
        self.probe_driver(row.export.driver).await?;
        let attachment = Attachment {
            id: uuid::Uuid::new_v4().to_string(),
            share: share.id.clone(),
            share_name: share.name.clone(),
            protocol,
            client: client.clone(),
            host: a.connector.host.clone(),
            ip: a.connector.ip.clone(),
            initiator: a.connector.initiator.clone(),
            mode,
            created_at: now(),
        };
        // The row and its intent go in together: until the intent is cleared the
        // attachment is unacknowledged, and recovery undoes it.
        let record = attachment.clone();
        let intent = self
            .store
            .write(move |c| {
                store::insert_attachment(c, &record)?;
                store::insert_intent(c, ATTACH_INTENT, &record.id, &serde_json::Value::Null)
            })
            .await?;
        failpoint::hit(failpoint::SHARE_ATTACH.before);
        let before = self.spec_for(&row, &share)?;
        let mut row = row;
        row.export.attached.push(model::Attached {
            client: client.clone(),
            mode,
        });
        let spec = self.spec_for(&row, &share)?;
        if let Err(cause) = self.exporter(row.export.driver).apply(&spec).await {
            // The driver may remember (and later write out) the spec it was given even
            // though applying it failed: give it back the one without this client.
            let undone = self.exporter(row.export.driver).apply(&before).await;
            let aid = attachment.id.clone();
            let forgot = self
                .store
                .write(move |c| {
                    store::delete_attachment_row(c, &aid)?;
                    store::delete_intent(c, intent)
                })
                .await;
            return Err(match undone.and(forgot) {
                Ok(()) => cause,
                Err(e) => Error::rollback(cause, e),
            });
        }
        failpoint::hit(failpoint::SHARE_ATTACH.after);
        // The exports record to stamp is read in the commit that acknowledges the attach.
        let sid = share.id.clone();
        let record = self
            .store
            .write_recorded(slot, move |c| {
                store::delete_intent(c, intent)?;
                super::stamp::read_exports_record(c, &sid, None)
            })
            .await?;
        failpoint::hit(failpoint::SHARE_ATTACH.committed);
        if let Err(e) = self.stamp_record(&share, record).await {
            log::warn!(
                "share {}: could not record its exports on the volume: {e}",
                share.name
            );
        }
        log::info!(
            "share attached: {} to host {} over {} ({client}, {})",
            share.name,
            attachment.host,
            protocol.as_str(),
            mode.as_str()
        );
        let info = self.connection_info(&share, &row, &client, mode)?;
        answer(Answer::attached(&Outcome::Created(attachment), info))
    }

    /// `share.detach` (terminate_connection): remove exactly that connector's client; the
    /// exports record is written before access is revoked, and a detach already done is
    /// `changed: false`.
    pub(super) async fn detach_share(&self, a: AttachArgs, slot: &AuditSlot) -> Result<Answer> {
        let id = self.share_id(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let (share, exports, attachments) = self.share_access(&id).await?;
        let protocols: Vec<Protocol> = match a.protocol {
            Some(p) => vec![p],
            None => Protocol::ALL.to_vec(),
        };
        let mut found = None;
        for p in protocols {
            let Ok(client) = self.protocol(p).connector_client(&a.connector) else {
                continue;
            };
            if let Some(x) = attachments
                .iter()
                .find(|x| x.protocol == p && x.client == client)
            {
                found = Some(x.clone());
                break;
            }
        }
        if found.is_none() {
            // Validate the connector anyway, so a malformed one is not answered "ok".
            let p = self.pick_protocol(&share, a.protocol, &a.connector, &exports)?;
            self.protocol(p).connector_client(&a.connector)?;
        }
        let Some(att) = found else {
            return answer(Answer::detached(&Outcome::AlreadyGone(None)));
        };
        let row = exports
            .iter()
            .find(|r| r.export.protocol == att.protocol)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("attachment {} has no export", att.id)))?;
        super::export::require_settled(&row, &share)?;
        let _exports = self.export_guard(row.export.driver).await;
        let mut after = row.clone();
        after.export.attached.retain(|x| x.client != att.client);
        let spec = self.spec_for(&after, &share)?;
        // The record without this attachment goes on the volume before access is revoked,
        // or a rebuild could bring the access back. A tampered volume (moved away, a
        // file planted in its place) does not hold the detach up: a rebuild adopts no
        // tampered object, and a restamp is journaled for when the volume is back. Any
        // other failure refuses the detach, with nothing revoked (like export.delete).
        let others: Vec<Attachment> = attachments
            .iter()
            .filter(|x| x.id != att.id)
            .cloned()
            .collect();
        let record = super::stamp::exports_record_of(exports.clone(), others, None);
        let restamp = match self.stamp_record(&share, record).await {
            Ok(()) => false,
            Err(Error::Tampered(why)) => {
                log::warn!(
                    "share {}: detaching {} although its exports record cannot be written \
                     ({why}); start-up writes it again once the volume is repaired",
                    share.name,
                    att.client
                );
                true
            }
            Err(e) => return Err(e),
        };
        // Journal the detach before access is revoked: once the driver has dropped the
        // client, a crash must not let recovery and reconcile grant it again.
        let aid = att.id.clone();
        let intent = self
            .store
            .write(move |c| store::insert_intent(c, DETACH_INTENT, &aid, &serde_json::Value::Null))
            .await?;
        failpoint::hit(failpoint::SHARE_DETACH.before);
        if let Err(cause) = self.exporter(row.export.driver).apply(&spec).await {
            // Nothing was revoked for certain; the attachment stands and a retry detaches
            // again. Give the driver back the spec that includes the client, so a later
            // write of the driver's state does not drop its access.
            let before = self.spec_for(&row, &share)?;
            let undone = self.exporter(row.export.driver).apply(&before).await;
            // The attachment stands: so does its record.
            self.stamp_exports(&share).await;
            let cleared = self
                .store
                .write(move |c| store::delete_intent(c, intent))
                .await;
            return Err(match undone.and(cleared) {
                Ok(()) => cause,
                Err(e) => Error::rollback(cause, e),
            });
        }
        failpoint::hit(failpoint::SHARE_DETACH.after);
        let (aid, sid) = (att.id.clone(), share.id.clone());
        let restamp_intent = self
            .store
            .write_recorded(slot, move |c| {
                store::delete_attachment_row(c, &aid)?;
                store::delete_intent(c, intent)?;
                if restamp {
                    return store::insert_intent(c, RESTAMP_INTENT, &sid, &serde_json::Value::Null)
                        .map(Some);
                }
                Ok(None)
            })
            .await?;
        failpoint::hit(failpoint::SHARE_DETACH.committed);
        if let Some(ri) = restamp_intent {
            // The volume may be back already.
            if self.try_stamp_exports(&share, None).await.is_ok() {
                self.store
                    .write(move |c| store::delete_intent(c, ri))
                    .await?;
            }
        }
        log::info!(
            "share detached: {} from host {} over {} ({})",
            share.name,
            att.host,
            att.protocol.as_str(),
            att.client
        );
        answer(Answer::detached(&Outcome::Deleted(Some(att))))
    }

    /// Start-up's replay of [`RESTAMP_INTENT`]: write the record from the database; if the
    /// volume still cannot take it, journal the intent again for the next start-up.
    pub(super) async fn replay_restamp(&self, intent: &store::Intent) -> Result<String> {
        let id = intent.object.clone();
        let Some(share) = self.store.call(move |c| store::get_share(c, &id)).await? else {
            return Ok(format!(
                "exports record of vanished share {}: dropped",
                intent.object
            ));
        };
        match self.try_stamp_exports(&share, None).await {
            Ok(()) => Ok(format!(
                "share {} ({}): the exports record a detach could not write (the volume was \
                 tampered) is written from the database",
                share.name, share.id
            )),
            Err(e) => {
                let sid = share.id.clone();
                self.store
                    .write(move |c| {
                        store::insert_intent(c, RESTAMP_INTENT, &sid, &serde_json::Value::Null)
                    })
                    .await?;
                Ok(format!(
                    "share {} ({}): its exports record still cannot be written ({e}); \
                     tried again at the next start-up",
                    share.name, share.id
                ))
            }
        }
    }

    /// `attachment.list`: who has what, for one share or all.
    pub(super) async fn list_attachments(&self, a: ShareFilter) -> Result<Answer> {
        let share = match &a.share {
            Some(s) => Some(self.share_id(s, a.pool.as_deref()).await?),
            None => None,
        };
        let rows = self
            .store
            .call(move |c| store::list_attachments(c, share.as_deref()))
            .await?;
        answer(Answer::read(&rows))
    }
}
