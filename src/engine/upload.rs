//! Image uploads over the socket: `image.upload.begin` opens a staging file in the pool,
//! `image.upload.chunk` writes a byte string at an offset (each chunk fits in a frame),
//! `image.upload.finish` checks that every byte arrived and starts the import job from
//! the staging file (which the job removes when it ends), `image.upload.abort` drops it.
//! Staging files of a previous run are removed at start-up.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ciborium::Value;

use super::{blocking, map, Engine};
use crate::error::{Error, Result};
use crate::model;
use crate::proto::{ImageImportArgs, UploadBeginArgs, UploadChunkArgs, UploadRef};

/// An upload in progress.
#[derive(Debug)]
pub struct Upload {
    args: UploadBeginArgs,
    pool: String,
    path: PathBuf,
    file: Arc<std::fs::File>,
    /// Byte ranges received, merged: start → end.
    ranges: BTreeMap<u64, u64>,
}

/// The uploads of this run.
#[derive(Debug, Default)]
pub struct Uploads {
    map: Mutex<BTreeMap<String, Upload>>,
}

/// Add `[start, end)` to a set of disjoint ranges, merging neighbours.
fn add_range(ranges: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
    let (mut s, mut e) = (start, end);
    let overlapping: Vec<u64> = ranges
        .range(..=end)
        .filter(|(_, re)| **re >= start)
        .map(|(rs, _)| *rs)
        .collect();
    for rs in overlapping {
        let re = ranges.remove(&rs).expect("present");
        s = s.min(rs);
        e = e.max(re);
    }
    ranges.insert(s, e);
}

/// Bytes received.
fn received(ranges: &BTreeMap<u64, u64>) -> u64 {
    ranges.iter().map(|(s, e)| e - s).sum()
}

impl Engine {
    pub(super) async fn begin_upload(&self, a: UploadBeginArgs) -> Result<Value> {
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
            ranges: BTreeMap::new(),
        };
        self.uploads
            .map
            .lock()
            .expect("uploads")
            .insert(id.clone(), upload);
        Ok(map(vec![("upload", Value::Text(id))]))
    }

    pub(super) async fn upload_chunk(&self, a: UploadChunkArgs) -> Result<Value> {
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
        add_range(&mut u.ranges, offset, end);
        Ok(super::map(vec![(
            "received",
            Value::Integer(received(&u.ranges).into()),
        )]))
    }

    pub(super) async fn finish_upload(&self, a: UploadRef) -> Result<Value> {
        let upload = {
            let mut map = self.uploads.map.lock().expect("uploads");
            let u = map
                .get(&a.upload)
                .ok_or_else(|| Error::NotFound(format!("no upload {:?}", short(&a.upload))))?;
            let got = received(&u.ranges);
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
        blocking(move || f.sync_all())
            .await
            .map_err(|e| Error::io("syncing the upload", e))?;
        let import = ImageImportArgs {
            name: upload.args.name.clone(),
            source: upload.path.display().to_string(),
            format: upload.args.format.clone(),
            checksum: upload.args.checksum.clone(),
            pool: Some(upload.pool.clone()),
        };
        let started = self.import_image_owned(import, true).await;
        if started.is_err() {
            let p = upload.path.clone();
            blocking(move || std::fs::remove_file(p)).await.ok();
        }
        started
    }

    pub(super) async fn abort_upload(&self, a: UploadRef) -> Result<Value> {
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
        Ok(map(vec![
            ("deleted", Value::Text(a.upload)),
            ("changed", Value::Bool(true)),
        ]))
    }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_count_once() {
        let mut r = BTreeMap::new();
        add_range(&mut r, 0, 10);
        add_range(&mut r, 20, 30);
        add_range(&mut r, 5, 15);
        assert_eq!(received(&r), 25);
        add_range(&mut r, 15, 20);
        assert_eq!(r.len(), 1);
        assert_eq!(received(&r), 30);
        add_range(&mut r, 0, 30);
        assert_eq!(received(&r), 30);
    }
}
