//! `shelfd recover --rebuild-db`: rebuild the database from the pools alone.
//!
//! Every volume and snapshot carries its identity (`trusted.shelf.*`, or LVM tags: id,
//! name, pool, size, lineage, metadata, and the share's exports and attachments). When
//! the database is lost or corrupt, this reads them back into a fresh database. It runs with the daemon
//! stopped (it takes the state-directory lock), builds the new database beside the old
//! one and renames it into place, and moves a damaged database aside rather than deleting
//! it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::model::{Share, ShareState, Snapshot, SnapshotGroup};
use crate::pool::OnDisk;
use crate::store::{self, now};

pub use super::stamp::StampedExports;

/// What a rebuild found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    /// Shares restored.
    pub shares: usize,
    /// Snapshots restored.
    pub snapshots: usize,
    /// Exports restored.
    pub exports: usize,
    /// Attachments restored.
    pub attachments: usize,
    /// Group snapshots restored (from their members' stamps).
    pub groups: usize,
    /// What was found but not restored, and why (the files are left as they are).
    pub skipped: Vec<String>,
    /// Where the previous database was moved, if there was one.
    pub moved_aside: Option<PathBuf>,
}

fn field<'a>(d: &'a OnDisk, k: &str) -> Result<&'a str, String> {
    d.identity.get(k).map(String::as_str).ok_or_else(|| {
        format!(
            "{} {} ({}): no {k} attribute",
            d.kind,
            d.id,
            d.path.display()
        )
    })
}

fn number<T: std::str::FromStr>(d: &OnDisk, k: &str) -> Result<T, String> {
    field(d, k)?
        .parse()
        .map_err(|_| format!("{} {}: attribute {k} is not a number", d.kind, d.id))
}

fn optional(d: &OnDisk, k: &str) -> Option<String> {
    d.identity.get(k).filter(|v| !v.is_empty()).cloned()
}

/// A share from the identity on its volume; `pool` is where it was found.
pub fn share_from_disk(d: &OnDisk, pool: &str) -> Result<Share, String> {
    if field(d, "id")? != d.id {
        return Err(format!(
            "share {}: its id attribute names another share",
            d.id
        ));
    }
    let name = field(d, "name")?;
    crate::model::validate_name("share", name).map_err(|e| format!("share {}: {}", d.id, e.0))?;
    let metadata: BTreeMap<String, String> = serde_json::from_str(field(d, "metadata")?)
        .map_err(|e| format!("share {}: metadata attribute: {e}", d.id))?;
    Ok(Share {
        id: d.id.clone(),
        name: name.to_string(),
        pool: pool.to_string(),
        size: number(d, "size")?,
        sparse: field(d, "sparse")? == "true",
        multiattach: d.identity.get("multiattach").map(String::as_str) == Some("true"),
        state: ShareState::Available,
        created_at: number(d, "created_at")?,
        origin_snapshot: optional(d, "origin_snapshot"),
        origin_share: optional(d, "origin_share"),
        metadata,
        layout: d
            .identity
            .get("layout")
            .and_then(|l| crate::model::Layout::parse(l))
            .unwrap_or_default(),
        filesystem: optional(d, "filesystem").and_then(|f| crate::model::FsKind::parse(&f)),
    })
}

/// A snapshot from the identity on its file.
pub fn snapshot_from_disk(d: &OnDisk, pool: &str) -> Result<Snapshot, String> {
    if field(d, "id")? != d.id {
        return Err(format!("snapshot {}: its id attribute names another", d.id));
    }
    for (kind, key) in [("snapshot", "name"), ("share", "share_name")] {
        crate::model::validate_name(kind, field(d, key)?)
            .map_err(|e| format!("snapshot {}: {}", d.id, e.0))?;
    }
    Ok(Snapshot {
        id: d.id.clone(),
        name: field(d, "name")?.to_string(),
        share: field(d, "share")?.to_string(),
        share_name: field(d, "share_name")?.to_string(),
        pool: pool.to_string(),
        size: number(d, "size")?,
        state: ShareState::Available,
        created_at: number(d, "created_at")?,
        // The group's row comes back from its members' stamps ([`group_from_disk`]).
        group: optional(d, "group"),
    })
}

/// The group a member snapshot's stamp names: its id, name and creation time (a stamp of
/// a shelf that wrote only `group` falls back on the member's own, which are the same).
///
/// `Ok(None)` for a snapshot of no group. A stamp that is there but damaged (a group id
/// that is not a UUID as shelf writes them, a name shelf would refuse, a creation time
/// that is not a number) is an error: the caller restores the member as a plain snapshot
/// and says why, rather than inventing a group from it.
pub fn group_from_disk(d: &OnDisk, snap: &Snapshot) -> Result<Option<SnapshotGroup>, String> {
    let Some(id) = snap.group.clone() else {
        return Ok(None);
    };
    if !crate::model::is_canonical_uuid(&id) {
        return Err(format!(
            "its group attribute {:?} is not a group id",
            crate::model::shorten(&id)
        ));
    }
    let name = match optional(d, "group_name") {
        Some(name) => {
            crate::model::validate_name("group snapshot", &name).map_err(|e| e.0)?;
            name
        }
        None => snap.name.clone(),
    };
    let created_at = match d.identity.get("group_created_at") {
        Some(_) => number(d, "group_created_at")?,
        None => snap.created_at,
    };
    Ok(Some(SnapshotGroup {
        id,
        name,
        pool: snap.pool.clone(),
        state: ShareState::Available,
        created_at,
        snapshots: Vec::new(),
    }))
}

/// Move a database and its WAL files aside; returns the new path of the main file.
fn move_aside(db: &Path) -> Result<PathBuf, String> {
    let to = PathBuf::from(format!("{}.lost-{}", db.display(), now()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        let dest = PathBuf::from(format!("{}{suffix}", to.display()));
        match std::fs::rename(&from, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot move {} aside: {e}", from.display())),
        }
    }
    Ok(to)
}

/// What an unidentified file that carries only `user.shelf.*` is reported as, without
/// `--trust-user-xattrs`.
const UNTRUSTED_LEGACY: &str = "it carries only user.shelf.* attributes (the stamp of a \
    shelf before the trusted.shelf.* one, which any NFS client of the share can also write, \
    so a tenant may have forged its name, size or exports); not adopted. If this pool's \
    shares were never exported to tenants, rebuild again with --force --trust-user-xattrs";

/// Adopt, or mark as not adopted, the files that carry only `user.shelf.*` attributes:
/// with `trust_user_xattrs`, those attributes are taken for their identity (the start-up
/// recovery then moves them to `trusted.shelf.*`); without it, each is reported why.
fn judge_legacy(found: &mut [OnDisk], trust_user_xattrs: bool) {
    for d in found.iter_mut() {
        let Some(t) = d
            .tampered
            .as_mut()
            .filter(|t| t.unidentified && !t.legacy.is_empty())
        else {
            continue;
        };
        if trust_user_xattrs {
            d.identity = std::mem::take(&mut t.legacy);
            d.tampered = None;
        } else {
            t.why = UNTRUSTED_LEGACY.to_string();
        }
    }
}

/// Rebuild `<state_dir>/shelf.db` from the configured pools. A database that opens and
/// holds shares is kept unless `force`. A volume or snapshot that carries only the
/// `user.shelf.*` stamp of an earlier shelf is adopted only with `trust_user_xattrs`.
pub fn rebuild_db(
    config: &Config,
    force: bool,
    trust_user_xattrs: bool,
) -> Result<RebuildReport, String> {
    let db = config.state_dir.join("shelf.db");
    let mut report = RebuildReport::default();
    if db.exists() {
        if let Ok(c) = store::open_connection(&db) {
            let n = store::list_shares(&c, None, None, None)
                .map(|s| s.len())
                .unwrap_or(0);
            drop(c);
            if n > 0 && !force {
                return Err(format!(
                    "{} opens and holds {n} share(s); pass --force to rebuild it from the pools anyway (the old file is kept)",
                    db.display()
                ));
            }
        }
        report.moved_aside = Some(move_aside(&db)?);
    }
    let tmp = config.state_dir.join("shelf.db.rebuild");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
    }
    let mut conn = store::open_connection(&tmp).map_err(|e| e.to_string())?;
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    for (name, (kind, path)) in config.resolved_pools() {
        let mut pool = super::make_pool(config, &name, kind, path).map_err(|e| e.to_string())?;
        pool.prepare().map_err(|e| format!("pool {name}: {e}"))?;
        let mut found = pool.scan().map_err(|e| format!("pool {name}: {e}"))?;
        judge_legacy(&mut found, trust_user_xattrs);
        restore_pool(&tx, &name, &found, &mut report).map_err(|e| e.to_string())?;
    }
    if trust_user_xattrs {
        // What was adopted from user.shelf.* is moved to trusted.shelf.* by the next
        // start-up, once (see `move_legacy_stamps`).
        store::clear_setting(&tx, store::LEGACY_STAMPS_MOVED).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    conn.close().map_err(|(_, e)| e.to_string())?;
    std::fs::rename(&tmp, &db)
        .map_err(|e| format!("cannot move the new database into place: {e}"))?;
    crate::sys::fs::fsync_dir(&config.state_dir).map_err(|e| e.to_string())?;
    Ok(report)
}

/// Insert one pool's shares, snapshots, exports and attachments.
fn restore_pool(
    c: &rusqlite::Connection,
    pool: &str,
    found: &[OnDisk],
    report: &mut RebuildReport,
) -> crate::error::Result<()> {
    let mut shares: Vec<(Share, &OnDisk)> = Vec::new();
    // A planted object (a symbolic link to another share's volume or to a secret, a hard
    // link, a FIFO...) is never adopted: its path is left as it is and reported.
    for d in found.iter().filter(|d| d.tampered.is_some()) {
        report.skipped.push(format!(
            "{} {} ({}): not restored: {}",
            d.kind,
            d.id,
            d.path.display(),
            d.tampered
                .as_ref()
                .map(|t| t.why.as_str())
                .unwrap_or_default()
        ));
    }
    let found: Vec<&OnDisk> = found.iter().filter(|d| d.tampered.is_none()).collect();
    for d in found.iter().copied().filter(|d| d.kind == "share") {
        match share_from_disk(d, pool) {
            Ok(s) => shares.push((s, d)),
            Err(e) => report.skipped.push(e),
        }
    }
    // The oldest of two volumes claiming one name keeps it.
    shares.sort_by(|a, b| (a.0.created_at, &a.0.id).cmp(&(b.0.created_at, &b.0.id)));
    let mut restored = std::collections::BTreeSet::new();
    for (s, d) in &shares {
        if let Err(e) = store::insert_share(c, s) {
            report
                .skipped
                .push(format!("share {} ({}): {e}", s.id, d.path.display()));
            continue;
        }
        restored.insert(s.id.clone());
        report.shares += 1;
    }
    let mut snaps = Vec::new();
    for d in found.iter().copied().filter(|d| d.kind == "snapshot") {
        let snap = match snapshot_from_disk(d, pool) {
            Ok(s) => s,
            Err(e) => {
                report.skipped.push(e);
                continue;
            }
        };
        if !restored.contains(&snap.share) {
            report.skipped.push(format!(
                "snapshot {} ({}) of share {} whose volume is gone; left on disk",
                snap.id, snap.name, snap.share
            ));
            continue;
        }
        snaps.push((snap, d));
    }
    let groups = restore_groups(c, &mut snaps, report)?;
    report.groups += groups;
    for (snap, _) in &snaps {
        store::insert_snapshot(c, snap)?;
        report.snapshots += 1;
    }
    for (s, d) in &shares {
        if !restored.contains(&s.id) {
            continue;
        }
        let Some(json) = d.identity.get("exports") else {
            continue;
        };
        let stamped: StampedExports = match serde_json::from_str(json) {
            Ok(x) => x,
            Err(e) => {
                report
                    .skipped
                    .push(format!("share {}: exports attribute: {e}", s.id));
                continue;
            }
        };
        for x in &stamped.exports {
            let mut e = x.export.clone();
            e.share = s.id.clone();
            e.share_name = s.name.clone();
            e.state = ShareState::Available;
            store::insert_export(c, &e, x.chap_secret.as_deref())?;
            report.exports += 1;
        }
        for a in &stamped.attachments {
            let mut a = a.clone();
            a.share = s.id.clone();
            store::insert_attachment(c, &a)?;
            report.attachments += 1;
        }
    }
    Ok(())
}

/// Insert the groups the member snapshots' stamps name (before the members, which refer
/// to them). A group that cannot be restored (its name taken by an older one, a member's
/// stamp damaged, members disagreeing on its name or creation time) leaves its members as
/// plain snapshots, reported. Returns how many groups were restored.
fn restore_groups(
    c: &rusqlite::Connection,
    snaps: &mut [(Snapshot, &OnDisk)],
    report: &mut RebuildReport,
) -> crate::error::Result<usize> {
    let mut groups: BTreeMap<String, SnapshotGroup> = BTreeMap::new();
    // Groups whose members' stamps disagree on the group's name or creation time, or one
    // of whose members' stamps is damaged: which member is right cannot be told, so none
    // of them is believed and every member comes back as a plain snapshot.
    let mut disputed = std::collections::BTreeSet::new();
    for (snap, d) in snaps.iter_mut() {
        match group_from_disk(d, snap) {
            Ok(None) => {}
            Ok(Some(g)) => match groups.get(&g.id) {
                None => {
                    groups.insert(g.id.clone(), g);
                }
                Some(seen) if seen.name == g.name && seen.created_at == g.created_at => {}
                Some(_) => {
                    disputed.insert(g.id);
                }
            },
            Err(e) => {
                report.skipped.push(format!(
                    "snapshot {} ({}): {e}; restored as a plain snapshot",
                    snap.id, snap.name
                ));
                if let Some(id) = snap
                    .group
                    .take()
                    .filter(|id| crate::model::is_canonical_uuid(id))
                {
                    disputed.insert(id);
                }
            }
        }
    }
    for id in &disputed {
        if let Some(g) = groups.remove(id) {
            report.skipped.push(format!(
                "group snapshot {} ({}): its members' stamps disagree or are damaged; its \
                 members are restored as plain snapshots",
                g.name, g.id
            ));
        }
    }
    let mut order: Vec<&SnapshotGroup> = groups.values().collect();
    order.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let (mut failed, mut restored) = (disputed, 0);
    for g in order {
        match store::insert_group(c, g) {
            Ok(()) => restored += 1,
            Err(e) => {
                report.skipped.push(format!(
                    "group snapshot {} ({}): {e}; its members are restored as plain snapshots",
                    g.name, g.id
                ));
                failed.insert(g.id.clone());
            }
        }
    }
    for (snap, _) in snaps.iter_mut() {
        if snap.group.as_ref().is_some_and(|g| failed.contains(g)) {
            snap.group = None;
        }
    }
    Ok(restored)
}
