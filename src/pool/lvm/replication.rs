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

    /// Run `read` on the thin pool's reserved metadata snapshot, released whatever happens.
    /// One reservation at a time per pool; a reservation left by a crash (or another tool)
    /// is released and taken again, with a warning.
    fn with_metadata_snapshot<T>(&self, read: impl FnOnce(&str) -> Result<T>) -> Result<T> {
        let _one = self.metadata.lock().expect("metadata lock");
        let target = thin::pool_target(self.vg(), &self.settings.thin_pool);
        let reserve = thin::pool_message(&target, "reserve_metadata_snap");
        let release = thin::pool_message(&target, "release_metadata_snap");
        if let Err(first) = self.run(&reserve) {
            log::warn!(
                "pool {}: reserving the thin pool's metadata snapshot failed ({first}); \
                 releasing one left reserved and trying again",
                self.name
            );
            let _ = self.run(&release);
            self.run(&reserve)?;
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

    /// Take a read of snapshot `snap_id`'s LV: activated by the first.
    fn hold_snapshot(&self, snap_id: &str) -> Result<()> {
        let mut reading = self.reading.lock().expect("reading");
        let n = reading.entry(snap_id.to_string()).or_insert(0);
        if *n == 0 {
            self.run(&report::activate(self.vg(), &snapshot_lv(snap_id), true))?;
        }
        *n += 1;
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
        let new_lv = self.find_lv(
            &lvs,
            &snapshot_lv(&snap.id),
            &format!("snapshot {}", snap.name),
        )?;
        let new_id = self.thin_id(new_lv)?;
        let base_id = match base {
            Some(b) => Some(self.thin_id(self.find_lv(
                &lvs,
                &snapshot_lv(&b.id),
                &format!("snapshot {}", b.name),
            )?)?),
            None => None,
        };
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
            let extents = thin::extents(&ranges, snap.size)
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
        let made = match base {
            Some(b) => {
                let lvs = self.list()?;
                let from = self.find_lv(&lvs, &snapshot_lv(b), &format!("snapshot {b}"))?;
                let from_size = from.size;
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
        self.open_device(&lv, true).map_err(|e| self.undo(e, &lv))
    }

    /// [`crate::pool::Pool::punch_staging`]: whole thin-pool blocks of the range are
    /// discarded (unmapped: they read as zeros, and take no space), the partial blocks at
    /// its edges written with zeros; all of it is written when the pool takes no discards.
    pub(super) fn zero_staging(&self, file: &File, offset: u64, len: u64) -> Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::Invalid("a hole past 2^64 bytes".into()))?;
        let grain = crate::sys::fs::discard_granularity(file).unwrap_or(0);
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
                    log::info!(
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
        self.run(&report::rename(self.vg(), &lv, &target))?;
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

    /// [`crate::pool::Pool::volume_from_snapshot`]: the share's LV is replaced by a writable
    /// thin snapshot of `snap`'s, grown to the share's size. Run again after a crash at any
    /// point, it ends the same (the share's LV removed if there, then made).
    pub(super) fn replace_volume(&self, snap: &Snapshot, share: &Share) -> Result<()> {
        let lv = share_lv(&share.id);
        self.remove_lv(&lv)?;
        let tags = self.encode(&share_identity(share))?;
        let cmd = report::create_snapshot(self.vg(), &snapshot_lv(&snap.id), &lv, true, &tags);
        self.run(&cmd).map_err(|e| self.undo(e.into(), &lv))?;
        if share.size > snap.size {
            self.run(&report::extend(self.vg(), &lv, share.size))?;
        }
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
