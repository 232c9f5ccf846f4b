//! Image uploads over the socket: `image.upload.begin` opens a staging file in the pool,
//! `image.upload.chunk` writes a byte string at an offset (each chunk fits in a frame),
//! `image.upload.finish` checks that every byte arrived and starts the import job from
//! the staging file (which the job removes when it ends), `image.upload.abort` drops it.
//! Staging files of a previous run are removed at start-up.
//!
//! Input trust: the bytes and the announced size are the tenant's (through an admin). An
//! upload's size counts against its pool like a preallocated share of that size would
//! (with the other uploads in progress), so uploads cannot fill a pool the capacity rules
//! protect (`no_space`); at most `[images] max_uploads` run at once (`busy`); the set of
//! received ranges costs O(log n) per chunk and at most [`MAX_RANGES`] entries.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ciborium::Value;

use super::{blocking, Engine};
use crate::error::{Error, Result};
use crate::model::shorten as short;
use crate::model::{self, Demand, Outcome};
use crate::proto::{Answer, ImageImportArgs, UploadBeginArgs, UploadChunkArgs, UploadRef};

/// Most disjoint ranges an upload may have received (chunks sent with gaps between them);
/// past it a chunk that opens another gap is refused.
pub const MAX_RANGES: usize = 65_536;

/// An upload in progress.
#[derive(Debug)]
pub struct Upload {
    args: UploadBeginArgs,
    pool: String,
    path: PathBuf,
    file: Arc<std::fs::File>,
    ranges: Ranges,
}

/// Byte ranges received, merged (start → end), and their total.
#[derive(Debug, Default)]
struct Ranges {
    map: BTreeMap<u64, u64>,
    received: u64,
}

/// The uploads of this run.
#[derive(Debug, Default)]
pub struct Uploads {
    map: Mutex<BTreeMap<String, Upload>>,
}

impl Ranges {
    /// Add `[start, end)`, merging with the ranges it touches: O(log n) plus one step per
    /// range merged away. Refused if it would make more than [`MAX_RANGES`] ranges.
    fn add(&mut self, start: u64, end: u64) -> Result<()> {
        let (mut s, mut e) = (start, end);
        let mut gone = 0u64;
        // Ranges are disjoint and sorted, so those touching [start, end] are the last ones
        // starting at or before `end`, back to the first that ends before `start`.
        while let Some((&rs, &re)) = self.map.range(..=end).next_back() {
            if re < start {
                break;
            }
            self.map.remove(&rs);
            gone += re - rs;
            s = s.min(rs);
            e = e.max(re);
        }
        if gone == 0 && self.map.len() >= MAX_RANGES {
            return Err(Error::Invalid(format!(
                "the upload has {MAX_RANGES} separate ranges; send chunks next to the ones sent"
            )));
        }
        self.map.insert(s, e);
        self.received = self.received - gone + (e - s);
        Ok(())
    }
}

impl Engine {
    /// `image.upload.begin`: reserve room for an image sent in chunks; the reply names
    /// the upload.
    pub(super) async fn begin_upload(&self, a: UploadBeginArgs) -> Result<Answer> {
        model::validate_name("image", &a.name)?;
        let pool = self.pick_pool(a.pool.as_deref())?;
        let dir = pool.images_dir().ok_or_else(|| {
            Error::Unsupported(format!("pool {} has no image cache", pool.name()))
        })?;
        if a.size == 0 || a.size > model::MAX_SIZE {
            return Err(Error::Invalid(format!(
                "upload size {} must be between 1 and {}",
                a.size,
                model::MAX_SIZE
            )));
        }
        if let Some(c) = &a.checksum {
            super::image::parse_checksum(c)?;
        }
        let (running, pending) = self.uploads_in_progress(pool.name());
        if running >= self.images.max_uploads {
            return Err(Error::Busy(format!(
                "{running} uploads are in progress, the most [images] max_uploads allows"
            )));
        }
        let room = self.room(&pool).await?;
        let demand = Demand::Share {
            size: a.size.saturating_add(pending),
            preallocated: true,
        };
        self.store
            .call(move |c| room.check(c, "an image upload (with the others in progress)", demand))
            .await?;
        let id = uuid::Uuid::new_v4().to_string();
        let path = dir.join(format!(".upload-{id}"));
        let (p, size) = (path.clone(), a.size);
        let file = blocking(move || -> std::io::Result<std::fs::File> {
            let f = crate::sys::fs::create_new(&p, 0o600)?;
            f.set_len(size)?;
            Ok(f)
        })
        .await
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let upload = Upload {
            args: a,
            pool: pool.name().to_string(),
            path,
            file: Arc::new(file),
            ranges: Ranges::default(),
        };
        let refused = {
            let mut m = self.uploads.map.lock().expect("uploads");
            if m.len() >= self.images.max_uploads {
                Some(upload)
            } else {
                m.insert(id.clone(), upload);
                None
            }
        };
        if let Some(u) = refused {
            blocking(move || std::fs::remove_file(u.path)).await.ok();
            return Err(Error::Busy(
                "uploads began at the same time took the last place ([images] max_uploads)".into(),
            ));
        }
        Ok(Answer::upload_begun(&id))
    }

    /// How many uploads are in progress, and the bytes those in `pool` announced.
    fn uploads_in_progress(&self, pool: &str) -> (usize, u64) {
        let m = self.uploads.map.lock().expect("uploads");
        let bytes = m
            .values()
            .filter(|u| u.pool == pool)
            .fold(0u64, |sum, u| sum.saturating_add(u.args.size));
        (m.len(), bytes)
    }

    /// `image.upload.chunk`: write bytes at an offset of an upload in progress.
    pub(super) async fn upload_chunk(&self, a: UploadChunkArgs) -> Result<Answer> {
        let Value::Bytes(data) = a.data else {
            return Err(Error::Invalid("data must be a CBOR byte string".into()));
        };
        let (file, size) = {
            let map = self.uploads.map.lock().expect("uploads");
            let u = map
                .get(&a.upload)
                .ok_or_else(|| Error::NotFound(format!("no upload {:?}", short(&a.upload))))?;
            (u.file.clone(), u.args.size)
        };
        let end = a
            .offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= size)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "chunk at {} of {} bytes goes past the upload's size {size}",
                    a.offset,
                    data.len()
                ))
            })?;
        let offset = a.offset;
        blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(|e| Error::io("writing an upload chunk", e))?;
        let mut map = self.uploads.map.lock().expect("uploads");
        let u = map
            .get_mut(&a.upload)
            .ok_or_else(|| Error::NotFound(format!("upload {} was aborted", short(&a.upload))))?;
        u.ranges.add(offset, end)?;
        Ok(Answer::received(u.ranges.received))
    }

    /// `image.upload.finish`: every byte received; start the import job on it.
    pub(super) async fn finish_upload(&self, a: UploadRef) -> Result<Answer> {
        let upload = {
            let mut map = self.uploads.map.lock().expect("uploads");
            let u = map
                .get(&a.upload)
                .ok_or_else(|| Error::NotFound(format!("no upload {:?}", short(&a.upload))))?;
            let got = u.ranges.received;
            if got != u.args.size {
                return Err(Error::Invalid(format!(
                    "upload {} has {got} of {} bytes",
                    short(&a.upload),
                    u.args.size
                )));
            }
            map.remove(&a.upload).expect("present")
        };
        let f = upload.file.clone();
        let reopened = blocking(move || {
            f.sync_all()?;
            f.try_clone()
        })
        .await
        .map_err(|e| Error::io("syncing the upload", e));
        let import = ImageImportArgs {
            name: upload.args.name.clone(),
            source: upload.path.display().to_string(),
            format: upload.args.format.clone(),
            checksum: upload.args.checksum.clone(),
            pool: Some(upload.pool.clone()),
        };
        let started = match reopened {
            Ok(file) => {
                self.import_image_from(import, file, Some(upload.path.clone()))
                    .await
            }
            Err(e) => Err(e),
        };
        if started.is_err() {
            let p = upload.path.clone();
            blocking(move || std::fs::remove_file(p)).await.ok();
        }
        started
    }

    /// `image.upload.abort`: drop an upload in progress and its staged bytes.
    pub(super) async fn abort_upload(&self, a: UploadRef) -> Result<Outcome<String>> {
        let upload = self
            .uploads
            .map
            .lock()
            .expect("uploads")
            .remove(&a.upload)
            .ok_or_else(|| Error::NotFound(format!("no upload {:?}", short(&a.upload))))?;
        let p = upload.path.clone();
        blocking(move || std::fs::remove_file(p))
            .await
            .map_err(|e| Error::io("removing the upload", e))?;
        Ok(Outcome::Deleted(a.upload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_count_once() {
        let mut r = Ranges::default();
        r.add(0, 10).unwrap();
        r.add(20, 30).unwrap();
        r.add(5, 15).unwrap();
        assert_eq!(r.received, 25);
        r.add(15, 20).unwrap();
        assert_eq!(r.map.len(), 1);
        assert_eq!(r.received, 30);
        r.add(0, 30).unwrap();
        assert_eq!(r.received, 30);
        r.add(40, 50).unwrap();
        r.add(60, 70).unwrap();
        r.add(35, 65).unwrap();
        assert_eq!((r.map.len(), r.received), (2, 30 + 35));
    }

    #[test]
    fn gaps_are_bounded_and_in_order_chunks_stay_one_range() {
        let mut r = Ranges::default();
        let t0 = std::time::Instant::now();
        for i in 0..MAX_RANGES as u64 {
            r.add(i * 2, i * 2 + 1).unwrap();
        }
        println!("{MAX_RANGES} gapped chunks booked in {:?}", t0.elapsed());
        assert!(r.add(u64::MAX - 1, u64::MAX).is_err());
        r.add(1, 2).unwrap();
        assert_eq!(r.map.len(), MAX_RANGES - 1);
        let mut s = Ranges::default();
        let t0 = std::time::Instant::now();
        for i in 0..1_000_000u64 {
            s.add(i * 10, i * 10 + 10).unwrap();
        }
        assert_eq!((s.map.len(), s.received), (1, 10_000_000));
        println!("1,000,000 in-order chunks booked in {:?}", t0.elapsed());
    }
}
