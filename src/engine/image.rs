//! The image cache (Nova's `_base`): `image.import` runs as a job that verifies the
//! source's checksum, converts it to raw with `qemu-img convert` (or copies a raw one), and
//! keeps one base per image in the pool; `share.create {from_image}` reflinks it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ciborium::Value;

use super::jobs::{JobCtx, JobHandle};
use super::{blocking, map, to_value, Engine};
use crate::error::{Error, Result};
use crate::model::{self, ShareState};
use crate::pool::Pool;
use crate::proto::{ImageImportArgs, ImageRef, PoolFilter};
use crate::store::{self, Image, Store};
use crate::sys::cmd::{Cmd, Runner};

/// Formats `qemu-img` converts from.
pub const IMAGE_FORMATS: &[&str] = &["raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc", "qed"];

/// How long one conversion may take.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// A checksum to verify: algorithm and lower-case hex digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `md5` (as Glance reports it) or `sha256`.
    pub algo: &'static str,
    /// The expected digest.
    pub hex: String,
}

/// Parse `md5:<hex>`, `sha256:<hex>`, or a bare digest (32 hex digits: md5; 64: sha256).
pub fn parse_checksum(text: &str) -> Result<Checksum> {
    let (algo, hex) = match text.split_once(':') {
        Some(("md5", h)) => ("md5", h),
        Some(("sha256", h)) => ("sha256", h),
        Some((a, _)) => {
            return Err(Error::Invalid(format!(
                "checksum algorithm {:?} is not md5 or sha256",
                a.chars().take(16).collect::<String>()
            )))
        }
        None if text.len() == 32 => ("md5", text),
        None => ("sha256", text),
    };
    let want = if algo == "md5" { 32 } else { 64 };
    if hex.len() != want || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "a {algo} checksum is {want} hex digits"
        )));
    }
    Ok(Checksum {
        algo,
        hex: hex.to_ascii_lowercase(),
    })
}

/// Parse `qemu-img convert -p` output: the last `(NN.NN/100%)` seen.
pub fn parse_progress(text: &str) -> Option<f64> {
    text.rsplit('(').find_map(|part| {
        part.split_once("/100%)")
            .and_then(|(p, _)| p.trim().parse().ok())
    })
}

/// `qemu-img info` of the source: (format, virtual size).
pub fn parse_info(json: &str) -> Result<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::Internal(format!("qemu-img info said something unreadable: {e}")))?;
    let format = v["format"].as_str().unwrap_or_default().to_string();
    let size = v["virtual-size"].as_u64().unwrap_or(0);
    Ok((format, size))
}

/// Read `source` through, hashing it; counts progress and stops when cancelled.
fn hash_file(source: &Path, algo: &str, job: &JobHandle) -> Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(source)
        .map_err(|e| Error::io(format!("opening {}", source.display()), e))?;
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if job.is_cancelled() {
            return Err(Error::Busy("cancelled".into()));
        }
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", source.display()), e))?;
        if n == 0 {
            break;
        }
        if algo == "md5" {
            md5.update(&buf[..n]);
        } else {
            sha.update(&buf[..n]);
        }
        job.add_done(n as u64);
    }
    let digest: Vec<u8> = if algo == "md5" {
        md5.finalize().to_vec()
    } else {
        sha.finalize().to_vec()
    };
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Copy a raw source into `dst`, leaving holes where the source has zeros.
fn copy_raw(source: &Path, dst: &Path, job: &JobHandle) -> Result<u64> {
    let mut src = std::fs::File::open(source)
        .map_err(|e| Error::io(format!("opening {}", source.display()), e))?;
    let mut out = crate::sys::fs::create_new(dst, 0o640)
        .map_err(|e| Error::io(format!("creating {}", dst.display()), e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        if job.is_cancelled() {
            return Err(Error::Busy("cancelled".into()));
        }
        let n = src
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", source.display()), e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(n as i64))
                .map_err(|e| Error::io("seeking", e))?;
        } else {
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
        }
        len += n as u64;
        job.add_done(n as u64);
    }
    out.set_len(len)
        .map_err(|e| Error::io(format!("sizing {}", dst.display()), e))?;
    Ok(len)
}

/// What an import needs, owned, for its task.
struct Import {
    store: Store,
    pool: Arc<dyn Pool>,
    runner: Runner,
    image: Image,
    source: PathBuf,
    format: Option<String>,
    checksum: Option<Checksum>,
    /// Remove the source when done (an upload's staging file).
    owned_source: bool,
}

impl Import {
    async fn run(self, ctx: JobCtx) -> Result<Value> {
        let dir = self.pool.images_dir().ok_or_else(|| {
            Error::Unsupported(format!("pool {} has no image cache", self.image.pool))
        })?;
        let tmp = dir.join(format!(".import-{}", self.image.id));
        let done = self.steps(&ctx, &dir, &tmp).await;
        if self.owned_source {
            let src = self.source.clone();
            blocking(move || std::fs::remove_file(src)).await.ok();
        }
        if done.is_err() {
            let (t, f) = (tmp.clone(), dir.join(&self.image.id));
            blocking(move || {
                let _ = std::fs::remove_file(t);
                let _ = std::fs::remove_file(f);
            })
            .await;
            let id = self.image.id.clone();
            if let Err(e) = self
                .store
                .write(move |c| store::delete_image_row(c, &id))
                .await
            {
                log::error!("image {}: cannot drop its row: {e}", self.image.name);
            }
        }
        done
    }

    async fn steps(&self, ctx: &JobCtx, dir: &Path, tmp: &Path) -> Result<Value> {
        let src = self.source.clone();
        let meta = blocking(move || std::fs::metadata(&src))
            .await
            .map_err(|e| Error::Invalid(format!("source {}: {e}", self.source.display())))?;
        let size = if meta.is_file() { meta.len() } else { 0 };
        let passes = if self.checksum.is_some() { 2 } else { 1 };
        ctx.set_total(size * passes);
        if let Some(want) = &self.checksum {
            let (src, algo, h) = (self.source.clone(), want.algo, ctx.counters());
            let got = blocking(move || hash_file(&src, algo, &h)).await?;
            ctx.checkpoint()?;
            if got != want.hex {
                return Err(Error::Invalid(format!(
                    "checksum mismatch: {} is {algo}:{got}, expected {algo}:{}",
                    self.source.display(),
                    want.hex
                )));
            }
        }
        let format = match &self.format {
            Some(f) => f.clone(),
            None => {
                let out = self
                    .runner
                    .run(&Cmd::new("qemu-img").args([
                        "info".to_string(),
                        "--output=json".into(),
                        self.source.display().to_string(),
                    ]))
                    .await?;
                parse_info(&out.stdout_text())?.0
            }
        };
        if !IMAGE_FORMATS.contains(&format.as_str()) {
            return Err(Error::Invalid(format!(
                "image format {format:?} is not one of {}",
                IMAGE_FORMATS.join(", ")
            )));
        }
        ctx.checkpoint()?;
        let base = if self.checksum.is_some() { size } else { 0 };
        if format == "raw" {
            let (src, dst, h) = (self.source.clone(), tmp.to_path_buf(), ctx.counters());
            blocking(move || copy_raw(&src, &dst, &h)).await?;
        } else {
            let cmd = Cmd::new("qemu-img")
                .args([
                    "convert".to_string(),
                    "-p".into(),
                    "-f".into(),
                    format.clone(),
                    "-O".into(),
                    "raw".into(),
                    self.source.display().to_string(),
                    tmp.display().to_string(),
                ])
                .timeout(CONVERT_TIMEOUT);
            let c = ctx.clone();
            let convert = self.runner.run_streaming(&cmd, move |chunk| {
                if let Some(pct) = parse_progress(&String::from_utf8_lossy(chunk)) {
                    c.progress(base + (pct / 100.0 * size as f64) as u64);
                }
            });
            let finished = futures_lite::future::or(async { Some(convert.await) }, async {
                ctx.cancellation().await;
                None
            })
            .await;
            match finished {
                Some(r) => {
                    r?;
                }
                None => return ctx.checkpoint().map(|_| Value::Null),
            }
        }
        ctx.checkpoint()?;
        let (t, d) = (tmp.to_path_buf(), dir.to_path_buf());
        let img = Image {
            source_format: format.clone(),
            ..self.image.clone()
        };
        let virtual_size = blocking(move || finish_file(&t, &d, &img)).await?;
        let (id, fmt) = (self.image.id.clone(), format.clone());
        self.store
            .write(move |c| store::finish_image(c, &id, virtual_size, &fmt))
            .await?;
        let mut image = self.image.clone();
        image.size = virtual_size;
        image.source_format = format.clone();
        image.state = ShareState::Available;
        log::info!(
            "image imported: {} ({}) from {} ({format}), {virtual_size} bytes",
            image.name,
            image.id,
            self.source.display()
        );
        to_value(&image)
    }
}

/// Stamp, sync and move the converted file into place; returns its size.
fn finish_file(tmp: &Path, dir: &Path, image: &Image) -> Result<u64> {
    let f = std::fs::File::open(tmp).map_err(|e| Error::io("opening the converted image", e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("reading its size", e))?
        .len();
    let mut attrs = std::collections::BTreeMap::new();
    attrs.insert("kind".to_string(), "image".to_string());
    attrs.insert("id".into(), image.id.clone());
    attrs.insert("name".into(), image.name.clone());
    attrs.insert("pool".into(), image.pool.clone());
    attrs.insert("size".into(), len.to_string());
    attrs.insert("source_format".into(), image.source_format.clone());
    attrs.insert(
        "checksum".into(),
        image.checksum.clone().unwrap_or_default(),
    );
    attrs.insert("created_at".into(), image.created_at.to_string());
    crate::sys::fs::set_identity(tmp, &attrs).map_err(|e| Error::io("stamping the image", e))?;
    f.sync_all()
        .map_err(|e| Error::io("syncing the image", e))?;
    let dst = dir.join(&image.id);
    std::fs::rename(tmp, &dst).map_err(|e| Error::io("moving the image into place", e))?;
    crate::sys::fs::fsync_dir(dir).map_err(|e| Error::io("syncing the images directory", e))?;
    Ok(len)
}

impl Engine {
    pub(super) async fn import_image(&self, a: ImageImportArgs) -> Result<Value> {
        self.import_image_owned(a, false).await
    }

    /// Start an import; with `owned_source` the job removes the source when it ends (an
    /// upload's staging file).
    pub(super) async fn import_image_owned(
        &self,
        a: ImageImportArgs,
        owned_source: bool,
    ) -> Result<Value> {
        model::validate_name("image", &a.name)?;
        let pool = self.pick_pool(a.pool.as_deref())?;
        if pool.images_dir().is_none() {
            return Err(Error::Unsupported(format!(
                "pool {} has no image cache",
                pool.name()
            )));
        }
        let source = PathBuf::from(&a.source);
        if !source.is_absolute() || a.source.contains('\0') {
            return Err(Error::Invalid(
                "source must be an absolute path on the appliance".into(),
            ));
        }
        if let Some(f) = &a.format {
            if !IMAGE_FORMATS.contains(&f.as_str()) {
                return Err(Error::Invalid(format!(
                    "image format {:?} is not one of {}",
                    f.chars().take(16).collect::<String>(),
                    IMAGE_FORMATS.join(", ")
                )));
            }
        }
        let checksum = a.checksum.as_deref().map(parse_checksum).transpose()?;
        let image = Image {
            id: uuid::Uuid::new_v4().to_string(),
            name: a.name.clone(),
            pool: pool.name().to_string(),
            size: 0,
            source_format: a.format.clone().unwrap_or_else(|| "auto".into()),
            checksum: checksum.as_ref().map(|c| format!("{}:{}", c.algo, c.hex)),
            state: ShareState::Creating,
            created_at: store::now(),
        };
        let row = image.clone();
        self.store
            .write(move |c| store::insert_image(c, &row))
            .await?;
        let import = Import {
            store: self.store.clone(),
            pool,
            runner: self.runner.clone(),
            image: image.clone(),
            source,
            format: a.format,
            checksum,
            owned_source,
        };
        let job = self
            .jobs
            .start(
                &self.store,
                &self.events,
                "image.import",
                &image.name,
                move |ctx| import.run(ctx),
            )
            .await?;
        Ok(map(vec![
            ("job", Value::Text(job)),
            ("image", to_value(&image)?),
        ]))
    }

    pub(super) async fn list_images(&self, a: PoolFilter) -> Result<Value> {
        let images = self
            .store
            .call(move |c| store::list_images(c, a.pool.as_deref()))
            .await?;
        to_value(&images)
    }

    pub(super) async fn show_image(&self, a: ImageRef) -> Result<Value> {
        let (image, shares) = self
            .store
            .call(move |c| {
                let i = store::find_image(c, &a.image, a.pool.as_deref())?;
                let n = store::count_shares_from_image(c, &i.id)?;
                Ok((i, n))
            })
            .await?;
        let mut v = to_value(&image)?;
        if let Value::Map(m) = &mut v {
            m.push((
                Value::Text("shares_made".into()),
                Value::Integer(shares.into()),
            ));
        }
        Ok(v)
    }

    pub(super) async fn delete_image(&self, a: ImageRef) -> Result<Value> {
        let image = self
            .store
            .call(move |c| store::find_image(c, &a.image, a.pool.as_deref()))
            .await?;
        let _g = self.locks.lock(&format!("image:{}", image.id)).await;
        if image.state != ShareState::Available {
            return Err(Error::Busy(format!(
                "image {} is still being imported",
                image.name
            )));
        }
        let id = image.id.clone();
        self.store
            .write(move |c| store::set_image_state(c, &id, ShareState::Deleting))
            .await?;
        let pool = self.pool(&image.pool)?;
        if let Some(dir) = pool.images_dir() {
            let path = dir.join(&image.id);
            blocking(move || match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
            })
            .await?;
        }
        let id = image.id.clone();
        self.store
            .write(move |c| store::delete_image_row(c, &id))
            .await?;
        log::info!("image deleted: {} ({})", image.name, image.id);
        Ok(map(vec![
            ("deleted", Value::Text(image.id)),
            ("changed", Value::Bool(true)),
        ]))
    }

    /// The cached base a `share.create {from_image}` starts from: the image and its file.
    pub(super) async fn image_for_share(
        &self,
        reference: &str,
        pool: Option<&str>,
    ) -> Result<(Image, PathBuf)> {
        let (r, p) = (reference.to_string(), pool.map(str::to_string));
        let image = self
            .store
            .call(move |c| store::find_image(c, &r, p.as_deref()))
            .await?;
        if image.state != ShareState::Available {
            return Err(Error::Busy(format!(
                "image {} is still being imported",
                image.name
            )));
        }
        let dir = self
            .pool(&image.pool)?
            .images_dir()
            .ok_or_else(|| Error::Unsupported(format!("pool {} has no image cache", image.pool)))?;
        let path = dir.join(&image.id);
        Ok((image, path))
    }

    /// Settle imports a restart interrupted: their partial files and rows go.
    pub(super) async fn recover_images(&self) -> Result<Vec<String>> {
        let failed = self.store.write(|c| store::fail_running_jobs(c)).await?;
        let mut out = Vec::new();
        if failed > 0 {
            out.push(format!(
                "{failed} job(s) were interrupted by the restart: marked failed"
            ));
        }
        let images = self.store.call(|c| store::list_images(c, None)).await?;
        let names = self.pool_names();
        // Staging files of unfinished uploads go: uploads do not outlive a run.
        for name in &names {
            if let Some(dir) = self.pool(name)?.images_dir() {
                blocking(move || {
                    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        if e.file_name().to_string_lossy().starts_with(".upload-") {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                })
                .await;
            }
        }
        for i in images
            .into_iter()
            .filter(|i| i.state != ShareState::Available && names.contains(&i.pool))
        {
            if let Some(dir) = self.pool(&i.pool)?.images_dir() {
                let (t, f) = (dir.join(format!(".import-{}", i.id)), dir.join(&i.id));
                blocking(move || {
                    let _ = std::fs::remove_file(t);
                    let _ = std::fs::remove_file(f);
                })
                .await;
            }
            let id = i.id.clone();
            self.store
                .write(move |c| store::delete_image_row(c, &id))
                .await?;
            out.push(format!(
                "image {} was {} at the crash: removed",
                i.name,
                i.state.as_str()
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_parse_like_glance_gives_them() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(parse_checksum(md5).unwrap().algo, "md5");
        assert_eq!(
            parse_checksum(&format!("md5:{}", md5.to_uppercase()))
                .unwrap()
                .hex,
            md5
        );
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(parse_checksum(sha).unwrap().algo, "sha256");
        assert!(parse_checksum("sha1:abc").is_err());
        assert!(parse_checksum("md5:xyz").is_err());
        assert!(parse_checksum("1234").is_err());
    }

    #[test]
    fn qemu_img_output_is_read() {
        assert_eq!(
            parse_progress("    (0.00/100%)\r    (42.50/100%)\r"),
            Some(42.5)
        );
        assert_eq!(parse_progress("nothing"), None);
        let info = r#"{"virtual-size": 67108864, "filename": "x.qcow2", "format": "qcow2"}"#;
        assert_eq!(parse_info(info).unwrap(), ("qcow2".to_string(), 64 << 20));
    }
}
