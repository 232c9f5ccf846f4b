//! `verify`: compare the database, the pools and the export daemons, and list every
//! difference (orphan, missing, drifted) without repairing anything. `reconcile` repairs
//! exports; recovery at start-up settles interrupted operations.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{blocking, Engine};
use crate::error::Result;
use crate::model::{Share, ShareState, Snapshot};
use crate::pool::{share_identity, snapshot_identity, OnDisk};
use crate::store;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The pool or export driver it concerns.
    pub area: String,
    /// `orphan` (on disk or in a daemon, not in the database), `missing` (in the database,
    /// not on disk or in the daemon), `drifted` (both, but different), `tampered` (what is
    /// at a volume's or snapshot's path is not the file shelf made: a symbolic link, a hard
    /// link, a FIFO, a directory, a file without its identity), `unsettled` (an operation
    /// in progress or interrupted), or `unavailable` (could not be checked).
    pub kind: String,
    /// What it concerns: a share or snapshot id, an IQN, a path.
    pub object: String,
    /// What differs.
    pub detail: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// `true` when there is no difference.
    pub clean: bool,
    /// Objects checked, by kind.
    pub checked: BTreeMap<String, usize>,
    /// Every difference.
    pub differences: Vec<Difference>,
}

/// A volume or snapshot on disk with its length.
#[derive(Debug, Clone)]
pub(super) struct Found {
    on_disk: OnDisk,
    len: Option<u64>,
}

fn diff(area: &str, kind: &str, object: &str, detail: String) -> Difference {
    Difference {
        area: area.to_string(),
        kind: kind.to_string(),
        object: object.to_string(),
        detail,
    }
}

/// The identity keys whose values must match the row (metadata included).
fn identity_drift(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: disk says {:?}, database says {v:?}",
                have.get(k).map(String::as_str).unwrap_or("(none)")
            )
        })
        .collect()
}

/// Compare one pool's rows with what is on its disk.
pub(super) fn compare_pool(
    pool: &str,
    shares: &[Share],
    snapshots: &[Snapshot],
    found: &[Found],
) -> Vec<Difference> {
    let mut out = Vec::new();
    let by_key: BTreeMap<(&str, &str), &Found> = found
        .iter()
        .map(|f| ((f.on_disk.kind.as_str(), f.on_disk.id.as_str()), f))
        .collect();
    let mut wanted = std::collections::BTreeSet::new();
    let mut check = |kind: &'static str,
                     id: &str,
                     state: ShareState,
                     size: u64,
                     identity: BTreeMap<String, String>,
                     out: &mut Vec<Difference>| {
        wanted.insert((kind, id.to_string()));
        if state != ShareState::Available {
            out.push(diff(
                pool,
                "unsettled",
                id,
                format!("{kind} is {}", state.as_str()),
            ));
            return;
        }
        if let Some(why) = by_key
            .get(&(kind, id))
            .and_then(|f| f.on_disk.tampered.as_ref())
        {
            out.push(diff(pool, "tampered", id, why.why.clone()));
            return;
        }
        // A share's directory without its `volume` file is scanned too (len None): that is
        // a missing volume, not a drifted one.
        let Some(f) = by_key.get(&(kind, id)).filter(|f| f.len.is_some()) else {
            out.push(diff(
                pool,
                "missing",
                id,
                format!("{kind} has no file on disk"),
            ));
            return;
        };
        if f.len != Some(size) {
            out.push(diff(
                pool,
                "drifted",
                id,
                format!(
                    "{kind} is {size} bytes in the database, {:?} on disk",
                    f.len
                ),
            ));
        }
        let drift = identity_drift(&identity, &f.on_disk.identity);
        if !drift.is_empty() {
            out.push(diff(pool, "drifted", id, drift.join("; ")));
        }
    };
    for s in shares {
        let mut ident = share_identity(s);
        ident.remove("exports");
        check("share", &s.id, s.state, s.size, ident, &mut out);
    }
    for s in snapshots {
        check(
            "snapshot",
            &s.id,
            s.state,
            s.size,
            snapshot_identity(s),
            &mut out,
        );
    }
    for f in found {
        if !wanted.contains(&(f.on_disk.kind.as_str(), f.on_disk.id.clone())) {
            // A plain file without identity and without a row is an orphan (a crash
            // before its identity was written); anything else out of place is tampered.
            if let Some(t) = f.on_disk.tampered.as_ref().filter(|t| !t.unidentified) {
                out.push(diff(pool, "tampered", &f.on_disk.id, t.why.clone()));
                continue;
            }
            let name = f.on_disk.identity.get("name").cloned().unwrap_or_default();
            out.push(diff(
                pool,
                "orphan",
                &f.on_disk.id,
                format!(
                    "{} {} at {} has no row in the database",
                    f.on_disk.kind,
                    if name.is_empty() {
                        "(no identity)"
                    } else {
                        &name
                    },
                    f.on_disk.path.display()
                ),
            ));
        }
    }
    out
}

impl Engine {
    /// Compare database, pools and exports; repair nothing.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let (shares, snapshots) = self
            .store
            .call(|c| store::all_shares_and_snapshots(c))
            .await?;
        let mut report = VerifyReport::default();
        report.checked.insert("shares".into(), shares.len());
        report.checked.insert("snapshots".into(), snapshots.len());
        let names = self.pool_names();
        for s in shares.iter().filter(|s| !names.contains(&s.pool)) {
            report.differences.push(diff(
                &s.pool,
                "unavailable",
                &s.id,
                format!(
                    "share {} is in pool {}, which is not configured",
                    s.name, s.pool
                ),
            ));
        }
        for name in names {
            let pool = self.pool(&name)?;
            let scanned = blocking(move || {
                pool.scan().map(|all| {
                    all.into_iter()
                        .map(|d| Found {
                            // A file pool gives the size it read from the checked
                            // descriptor; a planted object's (or its target's) is never
                            // looked at.
                            len: d.size.or_else(|| {
                                d.tampered
                                    .is_none()
                                    .then(|| std::fs::metadata(&d.path).ok().map(|m| m.len()))
                                    .flatten()
                            }),
                            on_disk: d,
                        })
                        .collect::<Vec<_>>()
                })
            })
            .await;
            let found = match scanned {
                Ok(f) => f,
                Err(e) => {
                    report.differences.push(diff(
                        &name,
                        "unavailable",
                        &name,
                        format!("cannot scan: {e}"),
                    ));
                    continue;
                }
            };
            let sh: Vec<Share> = shares.iter().filter(|s| s.pool == name).cloned().collect();
            let sn: Vec<Snapshot> = snapshots
                .iter()
                .filter(|s| s.pool == name)
                .cloned()
                .collect();
            report
                .differences
                .extend(compare_pool(&name, &sh, &sn, &found));
            // One read of the mount table for every formatted share of the pool.
            let mounted: std::collections::BTreeSet<std::path::PathBuf> = self
                .formatter
                .mounts()
                .await
                .into_iter()
                .map(|m| m.target)
                .collect();
            for s in sh.iter().filter(|s| {
                s.layout == crate::model::Layout::Filesystem && s.state == ShareState::Available
            }) {
                if !mounted.contains(&self.mountpoint(&s.id)) {
                    report.differences.push(diff(
                        &name,
                        "missing",
                        &s.id,
                        format!(
                            "filesystem share {} is not mounted at {}",
                            s.name,
                            self.mountpoint(&s.id).display()
                        ),
                    ));
                }
            }
        }
        self.verify_exports(&mut report).await?;
        report.clean = report.differences.is_empty();
        Ok(report)
    }

    async fn verify_exports(&self, report: &mut VerifyReport) -> Result<()> {
        let mut checked = 0;
        for (driver, x) in &self.exporters {
            // Like reconcile: one driver at a time, alone, so changes to it cannot make the
            // comparison stale, while a hung daemon holds up nobody else's changes.
            let _exclusive = self.export_guards[driver].write().await;
            let d = *driver;
            let rows = self
                .store
                .call(move |c| store::list_exports(c, None, Some(d)))
                .await?;
            checked += rows.len();
            for r in rows
                .iter()
                .filter(|r| r.export.state != ShareState::Available)
            {
                report.differences.push(diff(
                    r.export.driver.as_str(),
                    "unsettled",
                    &r.export.id,
                    format!(
                        "export of {} is {}",
                        r.export.share_name,
                        r.export.state.as_str()
                    ),
                ));
            }
            let specs = self.all_specs().await?.remove(driver).unwrap_or_default();
            if let Err(e) = x.probe().await {
                if !specs.is_empty() {
                    report.differences.push(diff(
                        driver.as_str(),
                        "unavailable",
                        driver.as_str(),
                        format!("{} export(s) not checked: {e}", specs.len()),
                    ));
                }
                continue;
            }
            match x.reconcile(&specs, false).await {
                Ok(findings) => report.differences.extend(
                    findings
                        .into_iter()
                        .map(|f| diff(&f.driver, &f.kind, &f.object, f.action)),
                ),
                Err(e) => report.differences.push(diff(
                    driver.as_str(),
                    "unavailable",
                    driver.as_str(),
                    e.to_string(),
                )),
            }
        }
        report.checked.insert("exports".into(), checked);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(id: &str, size: u64) -> Share {
        Share {
            id: id.into(),
            name: format!("n-{id}"),
            pool: "p".into(),
            size,
            sparse: true,
            multiattach: false,
            state: ShareState::Available,
            created_at: 1,
            origin_snapshot: None,
            origin_share: None,
            metadata: BTreeMap::new(),
            layout: crate::model::Layout::Block,
            filesystem: None,
        }
    }

    fn found(s: &Share, len: u64) -> Found {
        Found {
            on_disk: OnDisk {
                kind: "share".into(),
                id: s.id.clone(),
                path: format!("/p/shares/{}/volume", s.id).into(),
                size: None,
                identity: share_identity(s),
                tampered: None,
            },
            len: Some(len),
        }
    }

    /// Each difference's kind and object, in order.
    fn kinds(d: &[Difference]) -> Vec<(&str, &str)> {
        d.iter()
            .map(|x| (x.kind.as_str(), x.object.as_str()))
            .collect()
    }

    #[test]
    fn finds_orphans_missing_and_drift() {
        let a = share("a", 4096);
        let b = share("b", 4096);
        let c = share("c", 8192);
        let mut renamed = found(&c, 8192);
        renamed
            .on_disk
            .identity
            .insert("name".into(), "other".into());
        let disk = vec![found(&a, 4096), renamed, found(&share("z", 512), 512)];
        let d = compare_pool("p", &[a.clone(), b, c], &[], &disk);
        let kinds = kinds(&d);
        assert_eq!(
            kinds,
            vec![("missing", "b"), ("drifted", "c"), ("orphan", "z")],
            "{d:?}"
        );
        assert!(compare_pool("p", std::slice::from_ref(&a), &[], &[found(&a, 4096)]).is_empty());
        let short = compare_pool("p", std::slice::from_ref(&a), &[], &[found(&a, 512)]);
        assert_eq!(short[0].kind, "drifted");
        // The share's directory is there but its volume file is gone: one `missing`.
        let mut gone = found(&a, 0);
        gone.len = None;
        gone.on_disk.identity.clear();
        let d = compare_pool("p", std::slice::from_ref(&a), &[], &[gone]);
        assert_eq!(
            d.iter().map(|x| x.kind.as_str()).collect::<Vec<_>>(),
            ["missing"],
            "{d:?}"
        );
    }

    fn tamper(why: &str, unidentified: bool) -> crate::pool::Tamper {
        crate::pool::Tamper {
            why: why.into(),
            unidentified,
            legacy: Default::default(),
        }
    }

    /// A planted object is `tampered`, never `drifted` (nor an `orphan`, unless it is a
    /// plain file without identity and without a row: what a crash leaves).
    #[test]
    fn a_planted_volume_is_tampered_not_drifted_nor_orphan() {
        let a = share("a", 4096);
        let mut planted = found(&a, 0);
        planted.len = None;
        planted.on_disk.identity.clear();
        planted.on_disk.tampered = Some(tamper("it is a symbolic link", false));
        let mut stray = found(&share("z", 512), 512);
        stray.on_disk.tampered = Some(tamper("it is a FIFO", false));
        stray.on_disk.identity.clear();
        let mut plain = found(&share("y", 512), 512);
        plain.on_disk.tampered = Some(tamper("no identity", true));
        plain.on_disk.identity.clear();
        let mut foreign = found(&share("b", 512), 512);
        foreign.on_disk.tampered = Some(tamper("no identity", true));
        foreign.on_disk.identity.clear();
        let b = share("b", 512);
        let d = compare_pool("p", &[a, b], &[], &[planted, stray, plain, foreign]);
        let kinds = kinds(&d);
        assert_eq!(
            kinds,
            [
                ("tampered", "a"),
                ("tampered", "b"),
                ("tampered", "z"),
                ("orphan", "y")
            ],
            "{d:?}"
        );
    }
}
