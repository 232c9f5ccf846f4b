//! Reconciliation: make every driver's daemon hold exactly the exports the tree says, and
//! report what differed. Runs at start-up (after recovery), on the `reconcile` operation
//! and on the configured interval.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Engine;
use crate::error::Result;
use crate::export::{ExportSpec, Finding};
use crate::model::{Driver, ShareState};
use crate::store;

/// What a reconciliation found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Each difference and the action taken.
    pub findings: Vec<Finding>,
    /// Exports checked, per driver.
    pub checked: BTreeMap<String, usize>,
}

impl Report {
    /// Whether a daemon was changed: a missing, drifted or orphan object was repaired. A
    /// driver that could not be checked (`unavailable`, `error`) or a backing store that
    /// was not handed over (`tampered`) is reported but changed nothing, so it publishes
    /// no event.
    pub fn repaired(&self) -> bool {
        self.findings
            .iter()
            .any(|f| matches!(f.kind.as_str(), "missing" | "drifted" | "orphan"))
    }
}

impl Engine {
    /// The settled exports of every driver, as specs.
    pub(super) async fn all_specs(&self) -> Result<BTreeMap<Driver, Vec<ExportSpec>>> {
        let rows = self
            .store
            .call(|c| store::list_exports(c, None, None))
            .await?;
        let shares = self
            .store
            .call(|c| store::list_shares(c, None, None, None))
            .await?;
        let by_id: BTreeMap<&str, &crate::model::Share> =
            shares.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut out: BTreeMap<Driver, Vec<ExportSpec>> =
            self.exporters.keys().map(|d| (*d, Vec::new())).collect();
        for row in rows
            .iter()
            .filter(|r| r.export.state == ShareState::Available)
        {
            let Some(share) = by_id.get(row.export.share.as_str()) else {
                continue;
            };
            out.entry(row.export.driver)
                .or_default()
                .push(self.spec_for(row, share)?);
        }
        Ok(out)
    }

    /// Tell every driver what the tree holds (start-up, before any export operation).
    pub async fn load_exports(&self) -> Result<()> {
        for (driver, specs) in self.all_specs().await? {
            self.exporter(driver).load(&specs);
        }
        Ok(())
    }

    /// Reconcile every driver.
    pub async fn reconcile(&self) -> Result<Report> {
        let mut report = Report::default();
        for (driver, x) in &self.exporters {
            // One driver at a time, so a hung daemon holds up only its own driver's changes.
            let _exclusive = self.export_guards[driver].write().await;
            let specs = self.all_specs().await?.remove(driver).unwrap_or_default();
            if let Err(e) = x.probe().await {
                if !specs.is_empty() {
                    report.findings.push(Finding::new(
                        *driver,
                        "unavailable",
                        format!("{} export(s)", specs.len()),
                        format!("not checked: {e}"),
                    ));
                }
                continue;
            }
            report
                .checked
                .insert(driver.as_str().to_string(), specs.len());
            match x.reconcile(&specs, true).await {
                Ok(f) => report.findings.extend(f),
                Err(e) => report.findings.push(Finding::new(
                    *driver,
                    "error",
                    driver.as_str(),
                    e.to_string(),
                )),
            }
        }
        for f in &report.findings {
            log::warn!(
                "reconcile: {} {} {}: {}",
                f.driver,
                f.kind,
                f.object,
                f.action
            );
        }
        crate::metrics::reconciled(&report.findings);
        Ok(report)
    }
}
