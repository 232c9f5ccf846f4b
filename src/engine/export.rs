//! Export operations: create, list, show, delete; and the helpers attach and delete use.

use std::sync::Arc;

use super::{answer, failpoint, Engine};
use crate::error::{Error, Result};
use crate::export::protocol::{OptionArgs, ProtocolHandler};
use crate::export::{ExportSpec, Exporter};
use crate::model::{Driver, Export, ExportOptions, Medium, Outcome, Protocol, Share, ShareState};
use crate::proto::Answer;
use crate::proto::{ExportCreateArgs, ExportRef, ShareFilter};
use crate::store::{self, now, AuditSlot, ExportRow};

/// Refuse to build on an export that a failed create or delete left `creating` or
/// `deleting`: recovery removes such an export with its attachments, so nothing done on it
/// could be acknowledged.
pub(super) fn require_settled(row: &ExportRow, share: &Share) -> Result<()> {
    if row.export.state == ShareState::Available {
        return Ok(());
    }
    Err(Error::Busy(format!(
        "the {} export of share {} is {} (an earlier request failed half-way); delete it \
         again with export.delete, then retry",
        row.export.protocol.as_str(),
        share.name,
        row.export.state.as_str()
    )))
}

impl Engine {
    pub(super) fn exporter(&self, d: Driver) -> Arc<dyn Exporter> {
        self.exporters
            .get(&d)
            .expect("every driver has an exporter")
            .clone()
    }

    /// The rules of protocol `p`.
    pub(super) fn protocol(&self, p: Protocol) -> Arc<dyn ProtocolHandler> {
        self.protocols
            .get(&p)
            .expect("every protocol has its rules")
            .clone()
    }

    /// The spec a driver needs for an export of `share`.
    pub(super) fn spec_for(&self, row: &ExportRow, share: &Share) -> Result<ExportSpec> {
        let pool = self.pool(&share.pool)?;
        let path = match row.export.protocol.medium() {
            Medium::Directory if share.layout == crate::model::Layout::Filesystem => {
                self.mountpoint(&share.id)
            }
            Medium::Directory => pool.export_dir(&share.id),
            Medium::Block => pool.volume_path(&share.id),
        };
        Ok(ExportSpec {
            export: row.export.clone(),
            path,
            chap_secret: row.chap_secret.clone(),
            thin: share.sparse,
            backing: crate::export::Backing::of(pool.kind()),
        })
    }

    fn validate_export_args(&self, a: &ExportCreateArgs) -> Result<(Driver, ExportOptions)> {
        let rules = self.protocol(a.protocol);
        let driver = a.driver.unwrap_or(rules.default_driver());
        if driver.protocol() != a.protocol {
            return Err(Error::Invalid(format!(
                "driver {} does not serve {}",
                driver.as_str(),
                a.protocol.as_str()
            )));
        }
        let options = rules.export_options(&OptionArgs {
            clients: a.clients.clone(),
            access: a.access,
            sync: a.sync,
            root_squash: a.root_squash,
            chap: a.chap,
        })?;
        Ok((driver, options))
    }

    /// `export.create`: publish a share over one protocol through one driver. The row is
    /// journaled `creating` before the daemon is touched and settled after; an export the
    /// share already has with the same driver and options is answered `changed: false`,
    /// with other ones `already_exists`.
    pub(super) async fn create_export(
        &self,
        a: ExportCreateArgs,
        slot: &AuditSlot,
    ) -> Result<Answer> {
        let (driver, options) = self.validate_export_args(&a)?;
        let id = self.share_id(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let _exports = self.export_guard(driver).await;
        let share = self.share_by_id(&id).await?;
        self.check_protocol(&share, a.protocol)?;
        self.probe_driver(driver).await?;
        let (row, created) = self
            .ensure_export(&share, a.protocol, driver, options, slot)
            .await?;
        answer(Answer::object(&Outcome::created_if(created, row.export)))
    }

    /// Make sure `share` has an export for `protocol` with these settings; the caller holds
    /// the share's lock. Returns the export and whether it was created now. The commit that
    /// settles a new export writes the audit entry waiting in `slot`, if any.
    pub(super) async fn ensure_export(
        &self,
        share: &Share,
        protocol: Protocol,
        driver: Driver,
        options: ExportOptions,
        slot: &AuditSlot,
    ) -> Result<(ExportRow, bool)> {
        self.check_protocol(share, protocol)?;
        if share.layout == crate::model::Layout::Block {
            self.pool(&share.pool)?.check_export(protocol)?;
        }
        super::share::ensure_available(share)?;
        let export = Export {
            id: uuid::Uuid::new_v4().to_string(),
            share: share.id.clone(),
            share_name: share.name.clone(),
            protocol,
            driver,
            state: ShareState::Creating,
            options: options.clone(),
            target: String::new(),
            tid: None,
            fsid: None,
            chap_user: None,
            attached: Vec::new(),
            created_at: now(),
        };
        // What the driver cannot serve as the share promises (nvmet and a preallocated
        // file) is refused before the row is journaled or the daemon touched.
        let planned = ExportRow {
            export: export.clone(),
            chap_secret: None,
        };
        self.exporter(driver)
            .check_volume(&self.spec_for(&planned, share)?)
            .await?;
        let pool = self.pool(&share.pool)?;
        let sid = share.id.clone();
        let export_dir = if share.layout == crate::model::Layout::Filesystem {
            self.mountpoint(&share.id)
        } else {
            pool.export_dir(&share.id)
        }
        .display()
        .to_string();
        let naming = self
            .protocol(protocol)
            .naming(&share.id, &share.name, &export_dir);
        let wants_tid = self.exporter(driver).wants_tid();
        let (row, existing) = self
            .store
            .write(move |c| {
                if let Some(e) = store::get_export(c, &sid, protocol)? {
                    return Ok((e, true));
                }
                let (tid, fsid) = store::next_ids(c)?;
                let mut export = export;
                export.target = naming.targets.last().cloned().unwrap_or_default();
                for candidate in &naming.targets {
                    let taken: bool = c.query_row(
                        "SELECT count(*) > 0 FROM exports WHERE target = ?1",
                        [candidate],
                        |r| r.get(0),
                    )?;
                    if !taken {
                        export.target = candidate.clone();
                        break;
                    }
                }
                export.tid = wants_tid.then_some(tid);
                export.fsid = naming.fsid.then_some(fsid);
                let mut secret = None;
                if let Some((user, pass)) = naming.credentials {
                    export.chap_user = Some(user);
                    secret = Some(pass);
                }
                store::insert_export(c, &export, secret.as_deref())?;
                Ok((
                    ExportRow {
                        export,
                        chap_secret: secret,
                    },
                    false,
                ))
            })
            .await?;
        if existing {
            require_settled(&row, share)?;
            if row.export.driver == driver && row.export.options == options {
                return Ok((row, false));
            }
            return Err(Error::AlreadyExists(format!(
                "share {} already has an {} export ({}) with other settings",
                share.name,
                protocol.as_str(),
                row.export.id
            )));
        }
        failpoint::hit(failpoint::EXPORT_CREATE.before);
        let spec = self.spec_for(&row, share)?;
        let x = self.exporter(driver);
        if let Err(cause) = x.apply(&spec).await {
            return Err(self.undo_export(&x, &spec, cause).await);
        }
        failpoint::hit(failpoint::EXPORT_CREATE.after);
        let eid = row.export.id.clone();
        self.store
            .write_recorded(slot, move |c| {
                store::set_export_state(c, &eid, ShareState::Available)
            })
            .await?;
        // The volume records its exports for a rebuild; an export it cannot record is
        // refused (the record would otherwise disagree with the database from now on).
        if let Err(cause) = self.try_stamp_exports(share, None).await {
            return Err(self.undo_export(&x, &spec, cause).await);
        }
        failpoint::hit(failpoint::EXPORT_CREATE.committed);
        let mut row = row;
        row.export.state = ShareState::Available;
        log::info!(
            "export created: {} of share {} via {} ({})",
            protocol.as_str(),
            share.name,
            driver.as_str(),
            row.export.target
        );
        Ok((row, true))
    }

    /// Take back an export that could not be completed: out of the driver, then its row.
    /// Returns the error to answer with.
    async fn undo_export(&self, x: &Arc<dyn Exporter>, spec: &ExportSpec, cause: Error) -> Error {
        let undo = x.remove(spec).await;
        let eid = spec.export.id.clone();
        let forgot = self
            .store
            .write(move |c| store::delete_export_row(c, &eid))
            .await;
        match undo.and(forgot) {
            Ok(()) => cause,
            Err(e) => Error::rollback(cause, e),
        }
    }

    /// The export a reference names (its id, or share + protocol).
    async fn find_export(&self, a: &ExportRef) -> Result<ExportRow> {
        let a = a.clone();
        self.store
            .call(move |c| match (&a.export, &a.share, a.protocol) {
                (Some(id), _, _) => store::get_export_by_id(c, id)?
                    .ok_or_else(|| Error::NotFound(format!("no export {id:?}"))),
                (None, Some(s), Some(p)) => {
                    let share = store::find_share(c, s, a.pool.as_deref())?;
                    store::get_export(c, &share.id, p)?.ok_or_else(|| {
                        Error::NotFound(format!(
                            "share {} has no {} export",
                            share.name,
                            p.as_str()
                        ))
                    })
                }
                _ => Err(Error::Invalid(
                    "name the export by export id, or by share and protocol".into(),
                )),
            })
            .await
    }

    /// `export.show`: one export as stored.
    pub(super) async fn show_export(&self, a: ExportRef) -> Result<Answer> {
        answer(Answer::read(&self.find_export(&a).await?.export))
    }

    /// `export.list`: the exports of one share, or all.
    pub(super) async fn list_exports(&self, a: ShareFilter) -> Result<Answer> {
        let share = match &a.share {
            Some(s) => Some(self.share_id(s, a.pool.as_deref()).await?),
            None => None,
        };
        let rows = self
            .store
            .call(move |c| store::list_exports(c, share.as_deref(), None))
            .await?;
        answer(Answer::read(
            &rows.into_iter().map(|r| r.export).collect::<Vec<_>>(),
        ))
    }

    /// `export.delete`: write the volume's exports record without it, take it out of its
    /// daemon, then delete the row (the `deleting` mark is the journaled intent). Refused
    /// with `has_dependents` while it has attachments, unless `force`.
    pub(super) async fn delete_export(&self, a: ExportRef) -> Result<Answer> {
        let row = self.find_export(&a).await?;
        let _g = self.locks.lock(&row.export.share).await;
        let _exports = self.export_guard(row.export.driver).await;
        let share = self.share_by_id(&row.export.share).await?;
        let eid = row.export.id.clone();
        let row = self
            .store
            .call(move |c| {
                store::get_export_by_id(c, &eid)?
                    .ok_or_else(|| Error::NotFound(format!("export {eid} was deleted meanwhile")))
            })
            .await?;
        if row.export.attached.is_empty() || a.force {
            // The record without this export goes on the volume first: if it cannot be
            // written, the export stays (refused), rather than going with a record that a
            // rebuild would bring it back from.
            self.try_stamp_exports(&share, Some(&row.export.id))
                .await
                .map_err(|e| match e {
                    Error::Tampered(m) => Error::Tampered(format!(
                        "{m}; the export stays until the volume is repaired (or the share is \
                         deleted with force: true)"
                    )),
                    e => e,
                })?;
        }
        self.remove_export_locked(&share, &row, a.force, failpoint::EXPORT_DELETE)
            .await?;
        Ok(Answer::deleted(&Outcome::Deleted(row.export.id.clone())))
    }

    /// Remove one export (and, with `force`, its attachments); the caller holds the lock.
    /// The `deleting` mark is the journaled intent: recovery finishes the removal.
    /// `steps` names the failpoints, which differ by the operation that removes it.
    pub(super) async fn remove_export_locked(
        &self,
        share: &Share,
        row: &ExportRow,
        force: bool,
        steps: failpoint::DriverStep,
    ) -> Result<()> {
        if !row.export.attached.is_empty() && !force {
            return Err(Error::HasDependents(format!(
                "the {} export of share {} is attached by {}; detach first or pass force: true",
                row.export.protocol.as_str(),
                share.name,
                row.export
                    .attached
                    .iter()
                    .map(|a| a.client.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let eid = row.export.id.clone();
        self.store
            .write(move |c| store::set_export_state(c, &eid, ShareState::Deleting))
            .await?;
        failpoint::hit(steps.before);
        let spec = self.spec_for(row, share)?;
        self.exporter(row.export.driver).remove(&spec).await?;
        failpoint::hit(steps.after);
        let (eid, sid, proto) = (row.export.id.clone(), share.id.clone(), row.export.protocol);
        self.store
            .write(move |c| store::delete_export_and_attachments(c, &eid, &sid, proto))
            .await?;
        failpoint::hit(steps.committed);
        self.stamp_exports(share).await;
        log::info!(
            "export deleted: {} of share {}{}",
            row.export.protocol.as_str(),
            share.name,
            if row.export.attached.is_empty() {
                String::new()
            } else {
                format!(" with {} attachment(s)", row.export.attached.len())
            }
        );
        Ok(())
    }

    /// Tell every export of a grown share (`rows`, read in the commit that recorded the
    /// size) about its new size. Failures are returned as warnings: the grow itself is
    /// done and recorded.
    pub(super) async fn refresh_exports(&self, share: &Share, rows: Vec<ExportRow>) -> Vec<String> {
        let _exports = self.export_guards_for(&rows).await;
        let mut warnings = Vec::new();
        for row in rows {
            let result = match self.spec_for(&row, share) {
                Ok(spec) => self.exporter(row.export.driver).refresh_size(&spec).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                log::warn!(
                    "share {}: the {} export did not take the new size: {e}",
                    share.name,
                    row.export.driver.as_str()
                );
                warnings.push(format!("{} export: {e}", row.export.driver.as_str()));
            }
        }
        warnings
    }
}
