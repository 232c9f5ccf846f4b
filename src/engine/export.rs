//! Export operations: create, list, show, delete; and the helpers attach and delete use.

use std::sync::Arc;

use ciborium::Value;

use super::{failpoint, map, to_value, Engine};
use crate::error::{Error, Result};
use crate::export::{ExportSpec, Exporter};
use crate::model::{self, Access, Driver, Export, ExportOptions, Protocol, Share, ShareState};
use crate::proto::{ExportCreateArgs, ExportRef, ShareFilter};
use crate::store::{self, now, ExportRow};

/// A random string of `n` letters and digits (CHAP user suffixes and secrets).
pub(super) fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() < n {
                out.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

/// An IQN-safe form of a share name: lower case, `_` as `-`.
fn iqn_suffix(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

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

    /// The spec a driver needs for an export of `share`.
    pub(super) fn spec_for(&self, row: &ExportRow, share: &Share) -> Result<ExportSpec> {
        let pool = self.pool(&share.pool)?;
        let path = match row.export.protocol {
            Protocol::Nfs if share.layout == crate::model::Layout::Filesystem => {
                self.mountpoint(&share.id)
            }
            Protocol::Nfs => pool.export_dir(&share.id),
            Protocol::Iscsi => pool.volume_path(&share.id),
        };
        Ok(ExportSpec {
            export: row.export.clone(),
            path,
            chap_secret: row.chap_secret.clone(),
        })
    }

    fn validate_export_args(&self, a: &ExportCreateArgs) -> Result<(Driver, ExportOptions)> {
        let driver = a.driver.unwrap_or(match a.protocol {
            Protocol::Nfs => self.settings.nfs_driver,
            Protocol::Iscsi => self.settings.iscsi_driver,
        });
        if driver.protocol() != a.protocol {
            return Err(Error::Invalid(format!(
                "driver {} does not serve {}",
                driver.as_str(),
                a.protocol.as_str()
            )));
        }
        let clients =
            match (a.protocol, &a.clients) {
                (Protocol::Nfs, None) => return Err(Error::Invalid(
                    "an NFS export needs clients (hosts or networks allowed to mount it; [] for \
                     attached hosts only): shelf never exports to the world by default"
                        .into(),
                )),
                (_, c) => c.clone().unwrap_or_default(),
            };
        if clients.len() > 256 {
            return Err(Error::Invalid("at most 256 clients per export".into()));
        }
        for c in &clients {
            match a.protocol {
                Protocol::Nfs => model::validate_nfs_client(c)?,
                Protocol::Iscsi => model::validate_iqn(c)?,
            }
        }
        if a.protocol == Protocol::Iscsi
            && (a.access.is_some() || a.sync.is_some() || a.root_squash.is_some())
        {
            return Err(Error::Invalid(
                "access, sync and root_squash are NFS options".into(),
            ));
        }
        if a.protocol == Protocol::Nfs && a.chap.is_some() {
            return Err(Error::Invalid("chap is an iSCSI option".into()));
        }
        Ok((
            driver,
            ExportOptions {
                clients,
                access: a.access.unwrap_or(Access::Rw),
                sync: a.sync.unwrap_or(true),
                root_squash: a.root_squash.unwrap_or(true),
                chap: a.chap.unwrap_or(true),
            },
        ))
    }

    pub(super) async fn create_export(&self, a: ExportCreateArgs) -> Result<Value> {
        let (driver, options) = self.validate_export_args(&a)?;
        let id = self.share_id(&a.share, a.pool.as_deref()).await?;
        let _g = self.locks.lock(&id).await;
        let _exports = self.export_guard(driver).await;
        let share = self.share_by_id(&id).await?;
        Self::check_protocol(&share, a.protocol)?;
        self.probe_driver(driver).await?;
        let (row, created) = self
            .ensure_export(&share, a.protocol, driver, options)
            .await?;
        Ok(map(vec![
            ("export", to_value(&row.export)?),
            ("changed", Value::Bool(created)),
        ]))
    }

    /// Make sure `share` has an export for `protocol` with these settings; the caller holds
    /// the share's lock. Returns the export and whether it was created now.
    pub(super) async fn ensure_export(
        &self,
        share: &Share,
        protocol: Protocol,
        driver: Driver,
        options: ExportOptions,
    ) -> Result<(ExportRow, bool)> {
        Self::check_protocol(share, protocol)?;
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
        let pool = self.pool(&share.pool)?;
        let (prefix, sid) = (self.settings.iqn_prefix.clone(), share.id.clone());
        let export_dir = if share.layout == crate::model::Layout::Filesystem {
            self.mountpoint(&share.id)
        } else {
            pool.export_dir(&share.id)
        }
        .display()
        .to_string();
        let suffix = iqn_suffix(&share.name);
        let (row, existing) = self
            .store
            .write(move |c| {
                if let Some(e) = store::get_export(c, &sid, protocol)? {
                    return Ok((e, true));
                }
                let (tid, fsid) = store::next_ids(c)?;
                let mut export = export;
                let mut secret = None;
                match protocol {
                    Protocol::Iscsi => {
                        let candidate = format!("{prefix}:{suffix}");
                        let taken: bool = c.query_row(
                            "SELECT count(*) > 0 FROM exports WHERE target = ?1",
                            [&candidate],
                            |r| r.get(0),
                        )?;
                        export.target = if taken {
                            format!("{prefix}:{}", export.share)
                        } else {
                            candidate
                        };
                        export.tid = (driver == Driver::Tgt).then_some(tid);
                        export.chap_user = Some(format!(
                            "{}{}",
                            crate::export::tgt::CHAP_USER_PREFIX,
                            random_token(12)
                        ));
                        secret = Some(random_token(16));
                    }
                    Protocol::Nfs => {
                        export.target = export_dir;
                        export.fsid = Some(fsid);
                    }
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
            .write(move |c| store::set_export_state(c, &eid, ShareState::Available))
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

    pub(super) async fn show_export(&self, a: ExportRef) -> Result<Value> {
        to_value(&self.find_export(&a).await?.export)
    }

    pub(super) async fn list_exports(&self, a: ShareFilter) -> Result<Value> {
        let share = match &a.share {
            Some(s) => Some(self.share_id(s, a.pool.as_deref()).await?),
            None => None,
        };
        let rows = self
            .store
            .call(move |c| store::list_exports(c, share.as_deref(), None))
            .await?;
        to_value(&rows.into_iter().map(|r| r.export).collect::<Vec<_>>())
    }

    pub(super) async fn delete_export(&self, a: ExportRef) -> Result<Value> {
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
        Ok(map(vec![
            ("deleted", Value::Text(row.export.id.clone())),
            ("changed", Value::Bool(true)),
        ]))
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

    /// Tell every export of a grown share about its new size. Failures are returned as
    /// warnings: the grow itself is done and recorded.
    pub(super) async fn refresh_exports(&self, share: &Share) -> Vec<String> {
        let sid = share.id.clone();
        let rows = match self
            .store
            .call(move |c| store::list_exports(c, Some(&sid), None))
            .await
        {
            Ok(r) => r,
            Err(e) => return vec![e.to_string()],
        };
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
