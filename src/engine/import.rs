//! `image.import`'s job: open the source beneath an import directory, inspect it, then
//! hash, convert (confined, through `sys/qemu_img.rs`) or copy, stamp and move the result
//! into the image cache.
//!
//! Input trust: the source's bytes are the tenant's; see the top of `image.rs` and
//! docs/security.md §1.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ciborium::Value;

use super::image::{format_names, parse_checksum, Checksum};
use super::jobs::{JobCtx, JobHandle};
use super::{answer, blocking, to_value, Engine};
use crate::error::{Error, Result};
use crate::model::image_format::{self, ImageBytes, ImageFormat, Inspected};
use crate::model::{self, ShareState};
use crate::pool::Pool;
use crate::proto::{Answer, ImageImportArgs};
use crate::store::{self, Image, Store};
use crate::sys::cmd::Runner;
use crate::sys::landlock;
use crate::sys::qemu_img;

/// Debug builds only: `SHELF_UNSAFE_SKIP_IMAGE_INSPECTION=1` lets a refused image go on
/// to the confined converter, so a test can show the confinement alone stops it.
fn inspection_bypassed() -> bool {
    cfg!(debug_assertions)
        && std::env::var("SHELF_UNSAFE_SKIP_IMAGE_INSPECTION").is_ok_and(|v| v == "1")
}

/// An open image file, read at offsets for the inspector.
struct FileBytes<'a>(&'a File, u64);

impl ImageBytes for FileBytes<'_> {
    fn len(&self) -> u64 {
        self.1
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::result::Result<usize, String> {
        self.0.read_at(buf, offset).map_err(|e| e.to_string())
    }
}

/// Open an import source (admin-given path) beneath one of `dirs`, following no symlink,
/// and check it is a regular file.
fn open_import_source(dirs: &[PathBuf], source: &Path) -> Result<File> {
    use nix::fcntl::OFlag;
    let shown = source.display().to_string();
    let Some((dir, rel)) = dirs
        .iter()
        .find_map(|d| source.strip_prefix(d).ok().map(|r| (d, r)))
        .filter(|(_, r)| !r.as_os_str().is_empty())
    else {
        return Err(Error::Invalid(if dirs.is_empty() {
            format!("source {shown}: no import directories are configured ([images] import_dirs); upload the image instead")
        } else {
            format!(
                "source {shown} is not in an import directory ({})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }));
    };
    let dirfd = File::open(dir)
        .map_err(|e| Error::io(format!("opening import directory {}", dir.display()), e))?;
    let fd = crate::sys::fs::open_beneath(
        &dirfd,
        rel,
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP => {
            Error::Invalid(format!("source {shown}: a symlink in its path is refused"))
        }
        nix::errno::Errno::EXDEV => {
            Error::Invalid(format!("source {shown} leads out of {}", dir.display()))
        }
        e => Error::Invalid(format!("source {shown}: {}", e.desc())),
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {shown}"), e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "source {shown} is not a regular file"
        )));
    }
    Ok(file)
}

/// Read the source through, hashing it; counts progress and stops when cancelled.
fn hash_file(f: &File, algo: &str, job: &JobHandle) -> Result<String> {
    use sha2::Digest;
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        if job.is_cancelled() {
            return Err(Error::Busy("cancelled".into()));
        }
        let n = f
            .read_at(&mut buf, at)
            .map_err(|e| Error::io("reading the source", e))?;
        if n == 0 {
            break;
        }
        at += n as u64;
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

/// Copy a raw source into `dst` (created empty), leaving holes where the source has zeros.
fn copy_raw(src: &File, dst: &Path, job: &JobHandle) -> Result<u64> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .map_err(|e| Error::io(format!("opening {}", dst.display()), e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        if job.is_cancelled() {
            return Err(Error::Busy("cancelled".into()));
        }
        let n = src
            .read_at(&mut buf, len)
            .map_err(|e| Error::io("reading the source", e))?;
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
    /// The source, opened by shelfd (beneath an import directory, or an upload's staging
    /// file); its name only for messages.
    source: Arc<File>,
    source_name: String,
    /// What inspection found (the declared format when inspection was bypassed).
    inspected: Inspected,
    checksum: Option<Checksum>,
    /// An upload's staging file, removed when the job ends.
    staging: Option<PathBuf>,
}

impl Import {
    async fn run(self, ctx: JobCtx) -> Result<Value> {
        let dir = self.pool.images_dir().ok_or_else(|| {
            Error::Unsupported(format!("pool {} has no image cache", self.image.pool))
        })?;
        let tmp = dir.join(format!(".import-{}", self.image.id));
        let done = self.steps(&ctx, &dir, &tmp).await;
        if let Some(src) = self.staging.clone() {
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
        let size = blocking(move || src.metadata())
            .await
            .map_err(|e| Error::io(format!("reading {}", self.source_name), e))?
            .len();
        let passes = if self.checksum.is_some() { 2 } else { 1 };
        ctx.set_total(size * passes);
        if let Some(want) = &self.checksum {
            let (src, algo, h) = (self.source.clone(), want.algo, ctx.counters());
            let got = blocking(move || hash_file(&src, algo, &h)).await?;
            ctx.checkpoint()?;
            if got != want.hex {
                return Err(Error::Invalid(format!(
                    "checksum mismatch: {} is {algo}:{got}, expected {algo}:{}",
                    self.source_name, want.hex
                )));
            }
        }
        let format = self.inspected.format;
        ctx.checkpoint()?;
        let t = tmp.to_path_buf();
        blocking(move || crate::sys::fs::create_new(&t, 0o640).map(drop))
            .await
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        let base = if self.checksum.is_some() { size } else { 0 };
        if format == ImageFormat::Raw {
            let (src, dst, h) = (self.source.clone(), tmp.to_path_buf(), ctx.counters());
            blocking(move || copy_raw(&src, &dst, &h)).await?;
        } else {
            // Building the ruleset opens and fstats system paths and the output file:
            // off the event loop.
            let (src, t) = (self.source.clone(), tmp.to_path_buf());
            let cmd = blocking(move || qemu_img::convert_command(&src, &format.to_string(), &t))
                .await
                .map_err(|e| {
                    Error::Unsupported(format!("cannot confine qemu-img with Landlock: {e}"))
                })?;
            let c = ctx.clone();
            let convert = qemu_img::convert(&self.runner, &cmd, move |pct| {
                c.progress(base + (pct / 100.0 * size as f64) as u64);
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
            source_format: format.to_string(),
            ..self.image.clone()
        };
        // The converter must not produce more than the header announced (0: inspection
        // was bypassed).
        let most = Some(self.inspected.virtual_size).filter(|v| *v > 0);
        let virtual_size = blocking(move || finish_file(&t, &d, &img, most)).await?;
        let (id, fmt) = (self.image.id.clone(), format.to_string());
        self.store
            .write(move |c| store::finish_image(c, &id, virtual_size, &fmt))
            .await?;
        let mut image = self.image.clone();
        image.size = virtual_size;
        image.source_format = format.to_string();
        image.state = ShareState::Available;
        log::info!(
            "image imported: {} ({}) from {} ({format}), {virtual_size} bytes",
            image.name,
            image.id,
            self.source_name
        );
        to_value(&image)
    }
}

/// Stamp, sync and move the converted file into place; returns its size, which must be
/// at most `most`.
fn finish_file(tmp: &Path, dir: &Path, image: &Image, most: Option<u64>) -> Result<u64> {
    let f = std::fs::File::open(tmp).map_err(|e| Error::io("opening the converted image", e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("reading its size", e))?
        .len();
    if let Some(m) = most.filter(|m| len > *m) {
        return Err(Error::Invalid(format!(
            "the converted image is {len} bytes, more than the {m} its header announced"
        )));
    }
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
    /// `image.import`: cache an image from a file under an import directory; the job
    /// inspects, converts and checks it (the image is `creating` until it ends).
    pub(super) async fn import_image(&self, a: ImageImportArgs) -> Result<Answer> {
        let source = PathBuf::from(&a.source);
        if !source.is_absolute() || a.source.contains('\0') {
            return Err(Error::Invalid(
                "source must be an absolute path on the appliance".into(),
            ));
        }
        let dirs = self.images.import_dirs.clone();
        let file = blocking(move || open_import_source(&dirs, &source)).await?;
        self.import_image_from(a, file, None).await
    }

    /// Inspect the opened source and start the import job; `staging` is an upload's file,
    /// which the job removes when it ends.
    pub(super) async fn import_image_from(
        &self,
        a: ImageImportArgs,
        file: File,
        staging: Option<PathBuf>,
    ) -> Result<Answer> {
        model::validate_name("image", &a.name)?;
        let pool = self.pick_pool(a.pool.as_deref())?;
        if pool.images_dir().is_none() {
            return Err(Error::Unsupported(format!(
                "pool {} has no image cache",
                pool.name()
            )));
        }
        let declared = match &a.format {
            None => None,
            Some(f) => Some(ImageFormat::parse(f).ok_or_else(|| {
                Error::Invalid(format!(
                    "image format {:?} is not one of {}",
                    f.chars().take(16).collect::<String>(),
                    format_names()
                ))
            })?),
        };
        let checksum = a.checksum.as_deref().map(parse_checksum).transpose()?;
        let inspected = self.inspect_source(&pool, &file, declared).await?;
        if inspected.format != ImageFormat::Raw && landlock::abi_version().is_none() {
            return Err(Error::Unsupported(format!(
                "converting a {} image needs Landlock to confine qemu-img, and this kernel has none; only raw images can be imported",
                inspected.format
            )));
        }
        let image = Image {
            id: uuid::Uuid::new_v4().to_string(),
            name: a.name.clone(),
            pool: pool.name().to_string(),
            size: 0,
            source_format: inspected.format.to_string(),
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
            source: Arc::new(file),
            source_name: staging
                .as_ref()
                .map(|_| format!("upload of {}", a.name))
                .unwrap_or_else(|| a.source.clone()),
            inspected,
            checksum,
            staging,
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
        answer(Answer::import_started(&job, &image))
    }

    /// Inspect a source against the pool's limits; refusals are `invalid_argument`.
    async fn inspect_source(
        &self,
        pool: &Arc<dyn Pool>,
        file: &File,
        declared: Option<ImageFormat>,
    ) -> Result<Inspected> {
        let p = pool.clone();
        let usage = blocking(move || p.admit()).await?;
        let limit = self
            .policy(pool.name())
            .provisioning_limit(usage.size)
            .min(model::MAX_SIZE);
        let f = file
            .try_clone()
            .map_err(|e| Error::io("duplicating the source", e))?;
        let found = blocking(move || {
            let len = f.metadata()?.len();
            Ok::<_, std::io::Error>(image_format::inspect(
                &mut FileBytes(&f, len),
                declared,
                limit,
            ))
        })
        .await
        .map_err(|e| Error::io("reading the source", e))?;
        match (found, declared) {
            (Ok(i), _) => Ok(i),
            (Err(refused), Some(format)) if inspection_bypassed() => {
                log::warn!("{refused}; going on as {format} (inspection bypassed, debug build)");
                Ok(Inspected {
                    format,
                    virtual_size: 0,
                })
            }
            (Err(refused), _) => Err(Error::Invalid(refused.to_string())),
        }
    }
}
