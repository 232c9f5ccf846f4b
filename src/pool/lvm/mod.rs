//! The LVM thin pool: shares are thin LVs in one thin pool of one volume group.
//!
//! A share is the thin LV `shelf-<id>`, a snapshot the thin snapshot `shelf-snap-<id>`
//! (not activated: LVM's activation skip), a clone a writable, activated thin snapshot of a
//! snapshot, a grow an `lvextend`, and `share.revert` a staged thin snapshot renamed into
//! the share's place (see [`revert`]). LV names come from ids, never from user names. Every
//! LV carries its identity in tags (see [`tags`]), so `shelfd recover --rebuild-db` works
//! here as on file pools. Capacity comes from the thin pool's data and metadata usage, and
//! new work is refused once either is at its threshold. LVM is asked in batches: one
//! `lvs --reportformat json` of the VG answers a scan, a usage figure or an admission.
//!
//! The [`Pool`] trait is synchronous and its methods already run on the blocking pool, so
//! each method runs its commands through the runner's blocking entry
//! ([`Runner::run_blocking`]).

mod replication;
mod report;
mod revert;
mod tags;
mod thin;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use report::Lv;

use super::{share_identity, snapshot_identity, Allocation, OnDisk, Pool};
use crate::error::{Error, Result};
use crate::model::{Medium, PoolKind, Protocol, Share, Snapshot};
use crate::sys::cmd::{Cmd, CmdError, Output, Runner};
use crate::sys::fs::FsUsage;

/// An LVM pool's settings, from its `[pools.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct LvmSettings {
    /// The volume group.
    pub volume_group: String,
    /// The thin pool LV in it.
    pub thin_pool: String,
    /// Refuse new work once the thin pool's data is this full (percent).
    pub data_threshold_percent: u8,
    /// Refuse new work once the thin pool's metadata is this full (percent).
    pub metadata_threshold_percent: u8,
    /// Timeout of each LVM command.
    pub command_timeout: Duration,
}

/// A pool of thin LVs.
#[derive(Debug)]
pub struct LvmPool {
    name: String,
    settings: LvmSettings,
    runner: Runner,
    /// Sends reading each snapshot's LV (activated for the first, deactivated after the
    /// last).
    reading: std::sync::Mutex<BTreeMap<String, usize>>,
    /// Held while the thin pool's metadata snapshot is reserved (one at a time).
    metadata: std::sync::Mutex<()>,
    /// The thin pool's data block size in bytes (read when the pool opens; 0 unknown).
    chunk: std::sync::atomic::AtomicU64,
}

fn share_lv(id: &str) -> String {
    format!("shelf-{id}")
}

fn snapshot_lv(id: &str) -> String {
    format!("shelf-snap-{id}")
}

/// Identity keys that [`Pool::stamp`] rewrites (everything but the exports record).
fn is_identity_key(key: &str) -> bool {
    key != "exports"
}

impl LvmPool {
    /// An LVM pool named `name` (not touched until [`Pool::prepare`]).
    pub fn new(name: &str, settings: LvmSettings) -> Self {
        let runner = Runner::new(settings.command_timeout);
        LvmPool {
            name: name.to_string(),
            settings,
            runner,
            reading: Default::default(),
            metadata: Default::default(),
            chunk: Default::default(),
        }
    }

    fn vg(&self) -> &str {
        &self.settings.volume_group
    }

    fn run(&self, cmd: &Cmd) -> std::result::Result<Output, CmdError> {
        self.runner.run_blocking(cmd)
    }

    /// Every LV of the VG (one `lvs`).
    fn list(&self) -> Result<Vec<Lv>> {
        let out = self.run(&report::lvs(self.vg(), None))?;
        report::parse_lvs(&out.stdout_text())
            .map_err(|e| Error::Internal(format!("pool {}: {e}", self.name)))
    }

    /// The thin pool's row from a listing.
    fn thin_pool<'a>(&self, lvs: &'a [Lv]) -> Result<&'a Lv> {
        let tp = &self.settings.thin_pool;
        match lvs.iter().find(|l| &l.name == tp) {
            Some(l) if l.is_thin_pool() => Ok(l),
            Some(l) => Err(Error::Invalid(format!(
                "pool {}: {}/{tp} is not a thin pool (attributes {})",
                self.name,
                self.vg(),
                l.attr
            ))),
            None => Err(Error::NotFound(format!(
                "pool {}: volume group {} has no LV {tp}",
                self.name,
                self.vg()
            ))),
        }
    }

    fn usage_of(tp: &Lv) -> FsUsage {
        let used = (tp.size as f64 * tp.data_percent.unwrap_or(0.0) / 100.0) as u64;
        FsUsage {
            size: tp.size,
            free: tp.size.saturating_sub(used),
            used,
        }
    }

    fn encode(&self, identity: &BTreeMap<String, String>) -> Result<Vec<String>> {
        tags::encode(identity).map_err(|e| Error::Invalid(format!("pool {}: {e}", self.name)))
    }

    /// Replace the shelf tags of `lv` whose key `replace` selects with `new` (one `lvs` to
    /// read the current tags, one `lvchange` for the difference).
    fn retag(&self, lv: &str, new: Vec<String>, replace: impl Fn(&str) -> bool) -> Result<()> {
        let out = self.run(&report::lvs(self.vg(), Some(lv)))?;
        let rows = report::parse_lvs(&out.stdout_text())
            .map_err(|e| Error::Internal(format!("pool {}: {e}", self.name)))?;
        let current: Vec<String> = rows.into_iter().flat_map(|r| r.tags).collect();
        let remove: Vec<String> = current
            .iter()
            .filter(|t| tags::key_of(t).is_some_and(&replace) && !new.contains(t))
            .cloned()
            .collect();
        let add: Vec<String> = new.into_iter().filter(|t| !current.contains(t)).collect();
        if remove.is_empty() && add.is_empty() {
            return Ok(());
        }
        self.run(&report::retag(self.vg(), lv, &remove, &add))?;
        Ok(())
    }

    fn remove_lv(&self, lv: &str) -> Result<()> {
        match self.run(&report::remove(self.vg(), lv)) {
            Err(e) if report::is_missing_lv(e.stderr()) => Ok(()),
            r => r.map(|_| ()).map_err(Error::from),
        }
    }

    /// Remove a half-made LV; a failed removal turns `cause` into a rollback error.
    fn undo(&self, cause: Error, lv: &str) -> Error {
        match self.remove_lv(lv) {
            Ok(()) => cause,
            Err(e) => Error::rollback(cause, e),
        }
    }
}

impl Pool for LvmPool {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> PoolKind {
        PoolKind::Lvm
    }

    fn location(&self) -> String {
        format!("/dev/{}/{}", self.vg(), self.settings.thin_pool)
    }

    fn reflink(&self) -> bool {
        // Thin snapshots share blocks with their origin: instant, like reflinks.
        true
    }

    fn snapshot_freezes(&self) -> bool {
        // lvcreate suspends the origin with device-mapper's lockfs, which freezes a
        // mounted filesystem itself (and fails if it is frozen already).
        true
    }

    fn prepare(&mut self) -> Result<()> {
        let lvs = self.list()?;
        let chunk = self.thin_pool(&lvs)?.chunk_size;
        self.chunk
            .store(chunk, std::sync::atomic::Ordering::Relaxed);
        let inactive = lvs
            .iter()
            .any(|l| !l.is_active() && (l.name == self.settings.thin_pool || is_share_lv(&l.name)));
        if inactive {
            log::info!("pool {}: activating volume group {}", self.name, self.vg());
            self.run(&report::activate_vg(self.vg()))?;
        }
        self.release_stale_metadata_snapshot();
        let n = self.deactivate_snapshots(&lvs);
        if n > 0 {
            log::info!(
                "pool {}: {n} snapshot LV(s) a send left active deactivated",
                self.name
            );
        }
        Ok(())
    }

    fn create_volume(&self, share: &Share) -> Result<()> {
        if !share.sparse {
            return Err(Error::Unsupported(format!(
                "pool {} is an LVM thin pool: its shares are always thin; create share {} \
                 with sparse = true",
                self.name, share.name
            )));
        }
        let tags = self.encode(&share_identity(share))?;
        let lv = share_lv(&share.id);
        let cmd = report::create_thin(self.vg(), &self.settings.thin_pool, &lv, share.size, &tags);
        match self.run(&cmd) {
            Ok(_) => Ok(()),
            // lvcreate can fail after making the LV (e.g. activation); leave nothing behind.
            Err(e) => Err(self.undo(e.into(), &lv)),
        }
    }

    fn snapshot(&self, share: &Share, snap: &Snapshot) -> Result<()> {
        let tags = self.encode(&snapshot_identity(snap))?;
        let lv = snapshot_lv(&snap.id);
        let cmd = report::create_snapshot(self.vg(), &share_lv(&share.id), &lv, false, &tags);
        self.run(&cmd)
            .map(|_| ())
            .map_err(|e| self.undo(e.into(), &lv))
    }

    fn clone_volume(&self, snap: &Snapshot, share: &Share) -> Result<()> {
        let tags = self.encode(&share_identity(share))?;
        let lv = share_lv(&share.id);
        let cmd = report::create_snapshot(self.vg(), &snapshot_lv(&snap.id), &lv, true, &tags);
        self.run(&cmd).map_err(|e| self.undo(e.into(), &lv))?;
        if share.size > snap.size {
            self.run(&report::extend(self.vg(), &lv, share.size))
                .map_err(|e| self.undo(e.into(), &lv))?;
        }
        Ok(())
    }

    fn grow(&self, share: &Share, size: u64) -> Result<()> {
        let lv = share_lv(&share.id);
        let mut grown = share.clone();
        grown.size = size;
        let tags = self.encode(&share_identity(&grown))?;
        if size > share.size {
            match self.run(&report::extend(self.vg(), &lv, size)) {
                Ok(_) => {}
                // Already that size (a retried grow, or the extent rounding covered it).
                Err(e) if e.stderr().contains("matches existing size") => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.retag(&lv, tags, is_identity_key)
    }

    fn stamp(&self, share: &Share) -> Result<()> {
        let tags = self.encode(&share_identity(share))?;
        self.retag(&share_lv(&share.id), tags, is_identity_key)
    }

    fn stamp_exports(&self, share_id: &str, json: &str) -> Result<()> {
        let mut m = BTreeMap::new();
        m.insert("exports".to_string(), json.to_string());
        let tags = self.encode(&m)?;
        self.retag(&share_lv(share_id), tags, |k| k == "exports")
    }

    fn remove_volume(&self, share_id: &str) -> Result<()> {
        self.remove_lv(&share_lv(share_id))
    }

    fn revert_stage(&self, share: &Share, snap: &Snapshot, tag: &str) -> Result<()> {
        self.stage_revert(share, snap, tag)
    }

    fn revert_swap(&self, share: &Share) -> Result<()> {
        self.swap_revert(share)
    }

    fn revert_finish(&self, share_id: &str) -> Result<()> {
        self.finish_revert(share_id)
    }

    fn revert_state(&self, share_id: &str, tag: &str) -> Result<super::RevertState> {
        self.revert_state_of(share_id, tag)
    }

    fn revert_discard(&self, share_id: &str) -> Result<()> {
        self.discard_revert(share_id)
    }

    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        self.remove_lv(&snapshot_lv(snap_id))
    }

    fn send_plan(
        &self,
        snap: &Snapshot,
        base: Option<&Snapshot>,
        max: usize,
    ) -> Result<super::SendPlan> {
        self.plan_send(snap, base, max)
    }

    fn send_done(&self, snap_id: &str) {
        self.end_send(snap_id)
    }

    fn create_staging(
        &self,
        receive_id: &str,
        base: Option<&str>,
        size: u64,
    ) -> Result<std::fs::File> {
        self.make_staging(receive_id, base, size)
    }

    fn punch_staging(&self, file: &std::fs::File, offset: u64, len: u64) -> Result<()> {
        self.zero_staging(file, offset, len)
    }

    fn adopt_staging(&self, receive_id: &str, snap: &Snapshot) -> Result<()> {
        self.adopt_staged(receive_id, snap)
    }

    fn remove_staging(&self, receive_id: Option<&str>) -> Result<usize> {
        self.drop_staged(receive_id)
    }

    fn volume_from_snapshot(&self, snap: &Snapshot, share: &Share) -> Result<()> {
        self.replace_volume(snap, share)
    }

    fn volume_path(&self, share_id: &str) -> PathBuf {
        PathBuf::from(format!("/dev/{}/{}", self.vg(), share_lv(share_id)))
    }

    fn export_dir(&self, share_id: &str) -> PathBuf {
        self.volume_path(share_id)
    }

    fn check_export(&self, protocol: Protocol) -> Result<()> {
        match protocol.medium() {
            Medium::Block => Ok(()),
            Medium::Directory => Err(Error::Unsupported(format!(
                "pool {} is an LVM pool: its shares are raw block devices with no filesystem \
                 to serve over NFS; export them over iSCSI or NVMe/TCP",
                self.name
            ))),
        }
    }

    fn usage(&self) -> Result<FsUsage> {
        let lvs = self.list()?;
        Ok(Self::usage_of(self.thin_pool(&lvs)?))
    }

    fn allocation(&self) -> Result<Allocation> {
        let lvs = self.list()?;
        Ok(allocation_of(&lvs, self.thin_pool(&lvs)?))
    }

    fn admit(&self) -> Result<FsUsage> {
        let lvs = self.list()?;
        let tp = self.thin_pool(&lvs)?;
        let s = &self.settings;
        for (what, percent, limit) in [
            ("data", tp.data_percent, s.data_threshold_percent),
            (
                "metadata",
                tp.metadata_percent,
                s.metadata_threshold_percent,
            ),
        ] {
            let percent = percent.unwrap_or(0.0);
            if percent >= limit as f64 {
                return Err(Error::NoSpace(format!(
                    "pool {}: thin pool {}/{} {what} is {percent:.2}% full, at or above its \
                     {limit}% threshold; new work is refused until space is freed or the \
                     thin pool is extended",
                    self.name,
                    self.vg(),
                    s.thin_pool
                )));
            }
        }
        Ok(Self::usage_of(tp))
    }

    fn scan(&self) -> Result<Vec<OnDisk>> {
        let mut out = Vec::new();
        for lv in self.list()? {
            let (kind, id) = if let Some(id) = lv.name.strip_prefix("shelf-snap-") {
                ("snapshot", id)
            } else if let Some(id) = lv
                .name
                .strip_prefix("shelf-")
                .filter(|_| is_share_lv(&lv.name))
            {
                ("share", id)
            } else {
                continue;
            };
            let identity = tags::decode(lv.tags.iter().map(String::as_str)).unwrap_or_else(|e| {
                log::warn!("pool {}: LV {}: {e}", self.name, lv.name);
                BTreeMap::new()
            });
            out.push(OnDisk {
                kind: kind.to_string(),
                id: id.to_string(),
                path: PathBuf::from(format!("/dev/{}/{}", self.vg(), lv.name)),
                size: Some(stamped_size(&identity, lv.size, lv.extent_size)),
                identity,
                tampered: None,
            });
        }
        Ok(out)
    }
}

/// `percent` of `size` bytes (an LV's `data_percent`; none reported: nothing mapped).
fn share_of(size: u64, percent: Option<f64>) -> u64 {
    (size as f64 * percent.unwrap_or(0.0) / 100.0) as u64
}

/// The pool's allocation from one listing: the thin pool's data in use (every block once,
/// however many thin LVs and snapshots map it, and whatever else lives in the thin pool),
/// and each share LV's own mapped data (blocks it shares with a snapshot count in both).
fn allocation_of(lvs: &[Lv], tp: &Lv) -> Allocation {
    let mut a = Allocation {
        total: share_of(tp.size, tp.data_percent),
        ..Allocation::default()
    };
    for lv in lvs
        .iter()
        .filter(|l| l.pool == tp.name && is_share_lv(&l.name))
    {
        let id = lv.name.trim_start_matches("shelf-").to_string();
        a.shares.insert(id, share_of(lv.size, lv.data_percent));
    }
    a
}

/// Whether LV `name` is a share's (not a snapshot's, nor a revert's staged or old LV).
fn is_share_lv(name: &str) -> bool {
    name.starts_with("shelf-")
        && !name.starts_with("shelf-snap-")
        && !name.starts_with(replication::RECV_PREFIX)
        && !name.ends_with(replication::NEXT_SUFFIX)
        && !name.ends_with(revert::STAGED_SUFFIX)
        && !name.ends_with(revert::OLD_SUFFIX)
}

/// The size a volume holds in shelf's terms: LVM rounds an LV up to whole extents, so an LV
/// of exactly the stamped size rounded up holds the stamped size.
fn stamped_size(identity: &BTreeMap<String, String>, lv_size: u64, extent: u64) -> u64 {
    match identity.get("size").and_then(|s| s.parse::<u64>().ok()) {
        Some(size) if extent > 0 && size.div_ceil(extent) * extent == lv_size => size,
        _ => lv_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_lv_sizes_count_as_the_stamped_size() {
        let mut id = BTreeMap::new();
        id.insert("size".to_string(), "1000000".to_string());
        assert_eq!(stamped_size(&id, 4 << 20, 4 << 20), 1_000_000);
        assert_eq!(stamped_size(&id, 8 << 20, 4 << 20), 8 << 20);
        assert_eq!(stamped_size(&BTreeMap::new(), 8 << 20, 4 << 20), 8 << 20);
    }

    /// The VM tier's recorded `lvs` (report.rs): 0.20% of a 1 GiB thin pool in use.
    #[test]
    fn allocation_comes_from_data_percent() {
        let lvs = report::parse_lvs(include_str!("../../../tests/fixtures/lvm/lvs-shelfvg.json"))
            .unwrap();
        let tp = lvs.iter().find(|l| l.name == "tp").unwrap();
        let a = allocation_of(&lvs, tp);
        assert_eq!(a.total, (1073741824.0 * 0.20 / 100.0) as u64);
        assert_eq!(a.shares.len(), 2, "snapshots are not shares: {a:?}");
        assert_eq!(
            a.shares["4d91c873-e222-4730-8882-834d81e1d742"],
            (3221225472.0 * 0.03 / 100.0) as u64
        );
    }

    #[test]
    fn names_come_from_ids() {
        assert_eq!(share_lv("abc"), "shelf-abc");
        assert_eq!(snapshot_lv("abc"), "shelf-snap-abc");
        assert!(is_share_lv("shelf-abc") && !is_share_lv("shelf-snap-abc"));
        assert!(!is_share_lv("shelf-abc-revert") && !is_share_lv("shelf-abc-revert-old"));
        assert!(!is_share_lv("shelf-abc-recv") && !is_share_lv("shelf-recv-abc"));
    }
}
