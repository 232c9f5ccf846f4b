//! An LVM thin pool's side of send and receive (docs/replication.md §5).
//!
//! **Send.** The extents come from the thin pool's metadata, never from the data: the
//! pool's metadata snapshot is reserved (`dmsetup message … reserve_metadata_snap`), so it
//! can be read consistently while the pool runs; `thin_delta` of the base's and the new
//! snapshot's thin devices gives what changed (an incremental), `thin_dump --dev-id` the
//! new snapshot's mapped ranges (a full stream); the reservation is released on every
//! path (see [`super::thin`]). The snapshot's LV, which skips activation, is activated to
//! be read, and deactivated once the last send reading it is over
//! ([`crate::pool::Pool::send_done`]); start-up deactivates any a crash left active.
//!
//! **Receive.** The staging volume of a receive is the thin LV `shelf-recv-<receive-id>`:
//! a writable thin snapshot of the base snapshot's LV (an incremental: it shares all its
//! blocks) or a new, empty thin LV (a full stream). A hole of the stream is discarded on
//! whole thin-pool blocks (they are unmapped, and read as zeros) and written as zeros on
//! the partial blocks at its edges. At the commit the LV is tagged with the snapshot's
//! identity, deactivated, marked to skip activation and renamed `shelf-snap-<id>`; a share's
//! volume is then a writable thin snapshot of it. Staging LVs do not outlive a run.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::report::{self, Lv};
use super::{share_lv, snapshot_lv, thin, LvmPool};
use crate::error::{Error, Result};
use crate::model::{Share, Snapshot};
use crate::pool::{share_identity, snapshot_identity, SendPlan};
use crate::replication::diff::coalesce;
use crate::replication::format::MAX_EXTENTS;

/// The prefix of a receive's staging LV (never a share: see [`super::is_share_lv`]).
pub(super) const RECV_PREFIX: &str = "shelf-recv-";

fn staging_lv(receive_id: &str) -> Result<String> {
    // A receive id is a UUID made by shelfd; anything else never becomes an LV name.
    if receive_id.is_empty()
        || receive_id.len() > 64
        || !receive_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        return Err(Error::Invalid(format!(
            "{:?} is not a receive id",
            crate::model::escape_for_display(receive_id)
        )));
    }
    Ok(format!("{RECV_PREFIX}{receive_id}"))
}

/// The suffix of a share's next volume while a receive replaces it (never a share: see
/// [`super::is_share_lv`]).
pub(super) const NEXT_SUFFIX: &str = "-recv";

/// The least common multiple of two block sizes.
fn lcm(a: u64, b: u64) -> u64 {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// The most bytes of zeros written at once over a hole's partial blocks.
const ZEROS: usize = 1 << 20;

impl LvmPool {
    fn device(&self, lv: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/dev/{}/{lv}", self.vg()))
    }

    /// Open an LV's device, checking it is a block device.
    fn open_device(&self, lv: &str, write: bool) -> Result<File> {
        use std::os::unix::fs::FileTypeExt;
        let path = self.device(lv);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let meta = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        if !meta.file_type().is_block_device() {
            return Err(Error::Internal(format!(
                "{} is not a block device",
                path.display()
            )));
        }
        Ok(f)
    }

    fn find_lv<'a>(&self, lvs: &'a [Lv], lv: &str, what: &str) -> Result<&'a Lv> {
        lvs.iter().find(|l| l.name == lv).ok_or_else(|| {
            Error::NotFound(format!(
                "pool {}: {what} has no LV {}/{lv}",
                self.name,
                self.vg()
            ))
        })
    }

    fn thin_id(&self, lv: &Lv) -> Result<u64> {
        lv.thin_id.ok_or_else(|| {
            Error::Internal(format!(
                "pool {}: lvs reported no thin_id for {}",
                self.name, lv.name
            ))
        })
    }

    /// Run `read` on the thin pool's reserved metadata snapshot, released whatever happens
    /// (but a panic). One reservation at a time per pool (a lock). A reservation that
    /// cannot be taken is `busy`: another tool holds one (shelfd's own, left by a crash,
    /// is released at start-up, [`LvmPool::release_stale_metadata_snapshot`]).
    fn with_metadata_snapshot<T>(&self, read: impl FnOnce(&str) -> Result<T>) -> Result<T> {
        let _one = self
            .metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let target = thin::pool_target(self.vg(), &self.settings.thin_pool);
        let reserve = thin::pool_message(&target, "reserve_metadata_snap");
        let release = thin::pool_message(&target, "release_metadata_snap");
        if let Err(e) = self.run(&reserve) {
            return Err(Error::Busy(format!(
                "pool {}: the thin pool's metadata snapshot cannot be reserved ({e}); another \
                 tool may hold it (`dmsetup status {target}` shows a held root): release it \
                 with `dmsetup message {target} 0 release_metadata_snap` once that tool is done",
                self.name
            )));
        }
        let meta = thin::metadata_device(self.vg(), &self.settings.thin_pool);
        let out = read(&meta);
        match (out, self.run(&release)) {
            (Ok(v), Ok(_)) => Ok(v),
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(cause), Ok(_)) => Err(cause),
            (Err(cause), Err(e)) => Err(Error::rollback(cause, e.into())),
        }
    }

    /// Start-up: release a metadata snapshot of the thin pool a crash of shelfd left
    /// reserved (shelfd holds one only while a thin tool runs). Nothing to release, or no
    /// thin-pool target yet, is not an error.
    pub(super) fn release_stale_metadata_snapshot(&self) {
        let target = thin::pool_target(self.vg(), &self.settings.thin_pool);
        if self
            .run(&thin::pool_message(&target, "release_metadata_snap"))
            .is_ok()
        {
            log::warn!(
                "pool {}: a metadata snapshot of the thin pool was left reserved (a send cut \
                 by a crash, or another tool's): released",
                self.name
            );
        }
    }

    /// Take a read of snapshot `snap_id`'s LV: activated by the first.
    fn hold_snapshot(&self, snap_id: &str) -> Result<()> {
        let mut reading = self.reading.lock().expect("reading");
        let n = reading.get(snap_id).copied().unwrap_or(0);
        if n == 0 {
            self.run(&report::activate(self.vg(), &snapshot_lv(snap_id), true))?;
        }
        reading.insert(snap_id.to_string(), n + 1);
        Ok(())
    }

    /// Give a read back: the last deactivates the LV.
    fn release_snapshot(&self, snap_id: &str) {
        let mut reading = self.reading.lock().expect("reading");
        let Some(n) = reading.get_mut(snap_id) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        reading.remove(snap_id);
        let lv = snapshot_lv(snap_id);
        if let Err(e) = self.run(&report::activate(self.vg(), &lv, false)) {
            log::warn!("pool {}: deactivating {lv} after a send: {e}", self.name);
        }
    }

    /// [`crate::pool::Pool::send_plan`].
    pub(super) fn plan_send(
        &self,
        snap: &Snapshot,
        base: Option<&Snapshot>,
        max: usize,
    ) -> Result<SendPlan> {
        let lvs = self.list()?;
        let thin_of = |s: &Snapshot| {
            let lv = self.find_lv(&lvs, &snapshot_lv(&s.id), &format!("snapshot {}", s.name))?;
            self.thin_id(lv)
        };
        let new_id = thin_of(snap)?;
        let base_id = base.map(thin_of).transpose()?;
        self.hold_snapshot(&snap.id)?;
        let planned = (|| -> Result<SendPlan> {
            let ranges = self.with_metadata_snapshot(|meta| {
                let cmd = match base_id {
                    Some(b) => thin::delta(meta, b, new_id),
                    None => thin::dump(meta, new_id),
                };
                let text = self.run(&cmd)?.stdout_text();
                match base_id {
                    Some(b) => thin::parse_delta(&text, b, new_id, max),
                    None => thin::parse_dump(&text, new_id, max),
                }
                .map_err(|e| Error::Internal(format!("pool {}: {e}", self.name)))
            })?;
            let extents = thin::extents(&ranges, base.map_or(0, |b| b.size), snap.size)
                .map_err(|e| Error::Internal(format!("pool {}: {e}", self.name)))?;
            let file = self.open_device(&snapshot_lv(&snap.id), false)?;
            Ok(SendPlan {
                file,
                extents: coalesce(extents, MAX_EXTENTS as usize),
            })
        })();
        if planned.is_err() {
            self.release_snapshot(&snap.id);
        }
        planned
    }

    /// [`crate::pool::Pool::send_done`].
    pub(super) fn end_send(&self, snap_id: &str) {
        self.release_snapshot(snap_id)
    }

    /// [`crate::pool::Pool::create_staging`]: the staging LV, opened for writing.
    pub(super) fn make_staging(
        &self,
        receive_id: &str,
        base: Option<&str>,
        size: u64,
    ) -> Result<File> {
        let lv = staging_lv(receive_id)?;
        let mut marker = BTreeMap::new();
        marker.insert("kind".to_string(), "receiving".to_string());
        marker.insert("id".to_string(), receive_id.to_string());
        let tags = self.encode(&marker)?;
        // An incremental's staging LV past its base's size holds what the base's LV held
        // there (whole extents: blocks a tenant may have written, which no stream carried);
        // the stream sends only what the new snapshot maps, so that range is zeroed.
        let mut stale = None;
        let made = match base {
            Some(b) => {
                let lvs = self.list()?;
                let from = self.find_lv(&lvs, &snapshot_lv(b), &format!("snapshot {b}"))?;
                let from_size = from.size;
                let identity =
                    super::tags::decode(from.tags.iter().map(String::as_str)).unwrap_or_default();
                let base_size = super::stamped_size(&identity, from.size, from.extent_size);
                if size > base_size && from_size > base_size {
                    stale = Some((base_size, from_size.min(size)));
                }
                self.run(&report::create_snapshot(
                    self.vg(),
                    &snapshot_lv(b),
                    &lv,
                    true,
                    &tags,
                ))
                .map_err(|e| self.undo(e.into(), &lv))
                .and_then(|_| {
                    if size > from_size {
                        self.run(&report::extend(self.vg(), &lv, size))
                            .map(|_| ())
                            .map_err(|e| self.undo(e.into(), &lv))
                    } else {
                        Ok(())
                    }
                })
            }
            None => self
                .run(&report::create_thin(
                    self.vg(),
                    &self.settings.thin_pool,
                    &lv,
                    size,
                    &tags,
                ))
                .map(|_| ())
                .map_err(|e| self.undo(e.into(), &lv)),
        };
        made?;
        let file = self.open_device(&lv, true).map_err(|e| self.undo(e, &lv))?;
        if let Some((from, to)) = stale {
            if let Err(e) = self.zero_staging(&file, from, to - from) {
                drop(file);
                return Err(self.undo(e, &lv));
            }
        }
        Ok(file)
    }

    /// [`crate::pool::Pool::punch_staging`]: whole thin-pool blocks of the range are
    /// discarded (unmapped: they read as zeros, and take no space), the partial blocks at
    /// its edges written with zeros; all of it is written when the pool takes no discards.
    pub(super) fn zero_staging(&self, file: &File, offset: u64, len: u64) -> Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::Invalid("a hole past 2^64 bytes".into()))?;
        // dm-thin unmaps only whole pool blocks and ignores the rest of a discard: discard
        // on a grain that is a whole number of blocks and of the device's granularity.
        let chunk = self.chunk.load(std::sync::atomic::Ordering::Relaxed);
        let grain = match crate::sys::fs::discard_granularity(file) {
            Some(g) if chunk > 0 => lcm(chunk, g),
            _ => 0,
        };
        let (inner_start, inner_end) = match grain {
            0 => (end, end),
            g => (offset.div_ceil(g) * g, end / g * g),
        };
        let mut zeroed = Vec::new();
        if inner_start < inner_end {
            match crate::sys::fs::discard(file, inner_start, inner_end - inner_start) {
                Ok(()) => {
                    zeroed.push((offset, inner_start));
                    zeroed.push((inner_end, end));
                }
                Err(e) => {
                    log::debug!(
                        "pool {}: a discard for a received hole failed ({e}): writing zeros",
                        self.name
                    );
                    zeroed.push((offset, end));
                }
            }
        } else {
            zeroed.push((offset, end));
        }
        let zeros = vec![0u8; ZEROS.min(len as usize).max(1)];
        for (mut at, stop) in zeroed {
            while at < stop {
                let n = (stop - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)
                    .map_err(|e| Error::io("writing zeros over a received hole", e))?;
                at += n as u64;
            }
        }
        Ok(())
    }

    /// [`crate::pool::Pool::adopt_staging`]: the complete staging LV becomes snapshot
    /// `snap`'s (synced, tagged, deactivated, skipping activation, renamed).
    pub(super) fn adopt_staged(&self, receive_id: &str, snap: &Snapshot) -> Result<()> {
        let lv = staging_lv(receive_id)?;
        let target = snapshot_lv(&snap.id);
        let lvs = self.list()?;
        self.find_lv(&lvs, &lv, &format!("receive {receive_id}"))?;
        if lvs.iter().any(|l| l.name == target) {
            return Err(Error::AlreadyExists(format!(
                "snapshot {} is already on disk",
                snap.id
            )));
        }
        self.open_device(&lv, false)?
            .sync_all()
            .map_err(|e| Error::io("syncing the received snapshot", e))?;
        let tags = self.encode(&snapshot_identity(snap))?;
        self.retag(&lv, tags, |_| true)?;
        self.run(&report::activate(self.vg(), &lv, false))?;
        self.run(&report::skip_activation(self.vg(), &lv))?;
        if let Err(e) = self.run(&report::rename(self.vg(), &lv, &target)) {
            // A rename that timed out may have happened all the same: the snapshot's LV,
            // absent when this began, must not stay behind a commit that failed.
            let cause: Error = e.into();
            let renamed = self.list().map(|l| l.iter().any(|l| l.name == target));
            return Err(match renamed {
                Ok(true) => match self.remove_lv(&target) {
                    Ok(()) => cause,
                    Err(e) => Error::rollback(cause, e),
                },
                _ => cause,
            });
        }
        Ok(())
    }

    /// [`crate::pool::Pool::remove_staging`].
    pub(super) fn drop_staged(&self, receive_id: Option<&str>) -> Result<usize> {
        let names: Vec<String> = match receive_id {
            Some(id) => vec![staging_lv(id)?],
            None => self
                .list()?
                .into_iter()
                .filter(|l| l.name.starts_with(RECV_PREFIX))
                .map(|l| l.name)
                .collect(),
        };
        let mut n = 0;
        for lv in names {
            match self.run(&report::remove(self.vg(), &lv)) {
                Ok(_) => n += 1,
                Err(e) if report::is_missing_lv(e.stderr()) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    /// [`crate::pool::Pool::volume_from_snapshot`]: a writable thin snapshot of `snap`'s LV,
    /// grown to the share's size, is made as `shelf-<id>-recv` (an earlier attempt's
    /// leftover removed first), then the share's LV is removed and the new one renamed into
    /// its place. A failure to make it leaves the share's LV as it was; run again after a
    /// crash at any step, this ends the same (the journal's roll-forward).
    pub(super) fn replace_volume(&self, snap: &Snapshot, share: &Share) -> Result<()> {
        let lv = share_lv(&share.id);
        let next = format!("{lv}{NEXT_SUFFIX}");
        self.remove_lv(&next)?;
        let tags = self.encode(&share_identity(share))?;
        let cmd = report::create_snapshot(self.vg(), &snapshot_lv(&snap.id), &next, true, &tags);
        self.run(&cmd).map_err(|e| self.undo(e.into(), &next))?;
        if share.size > snap.size {
            self.run(&report::extend(self.vg(), &next, share.size))
                .map_err(|e| self.undo(e.into(), &next))?;
        }
        self.remove_lv(&lv)?;
        self.run(&report::rename(self.vg(), &next, &lv))?;
        Ok(())
    }

    /// Start-up: a snapshot's LV a send left active (shelfd stopped mid-send) is
    /// deactivated; returns how many.
    pub(super) fn deactivate_snapshots(&self, lvs: &[Lv]) -> usize {
        let mut n = 0;
        for lv in lvs
            .iter()
            .filter(|l| l.name.starts_with("shelf-snap-") && l.is_active())
        {
            match self.run(&report::activate(self.vg(), &lv.name, false)) {
                Ok(_) => n += 1,
                Err(e) => log::warn!("pool {}: deactivating {}: {e}", self.name, lv.name),
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_come_from_receive_ids_only() {
        assert_eq!(
            staging_lv("0f8e2c5a-1b2c-4d5e-8f90-123456789abc").unwrap(),
            "shelf-recv-0f8e2c5a-1b2c-4d5e-8f90-123456789abc"
        );
        for bad in ["", "../x", "a/b", "shelf-1", &"a".repeat(65)] {
            assert!(staging_lv(bad).is_err(), "{bad}");
        }
        assert!(!super::super::is_share_lv(&staging_lv("abc").unwrap()));
    }

    /// On a regular file (no block device), the whole range is written with zeros.
    #[test]
    fn a_hole_without_discards_is_written_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("v"))
            .unwrap();
        f.write_all_at(&vec![7u8; 3 << 20], 0).unwrap();
        let pool = LvmPool::new(
            "t",
            super::super::LvmSettings {
                volume_group: "vg".into(),
                thin_pool: "tp".into(),
                data_threshold_percent: 90,
                metadata_threshold_percent: 90,
                command_timeout: std::time::Duration::from_secs(1),
            },
        );
        pool.zero_staging(&f, 1000, (2 << 20) + 5).unwrap();
        let mut buf = vec![0u8; 3 << 20];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..1000].iter().all(|&b| b == 7));
        assert!(buf[1000..1000 + (2 << 20) + 5].iter().all(|&b| b == 0));
        assert!(buf[1000 + (2 << 20) + 5..].iter().all(|&b| b == 7));
    }
}
