//! The image cache (Nova's `_base`): `image.import` runs as a job that verifies the
//! source's checksum, converts it to raw with `qemu-img convert` (or copies a raw one), and
//! keeps one base per image in the pool; `share.create {from_image}` reflinks it.
//!
//! Input trust: the source's bytes are the tenant's. Before the job starts, the source is
//! opened beneath a configured import directory without following symlinks (an upload's
//! staging file is shelfd's own), and [`crate::model::image_format::inspect`] refuses what
//! names another file, claims another format or describes a disk over the pool's limit.
//! `qemu-img` then runs with `-f` fixed, reads the source through a descriptor shelfd
//! opened, and is confined by Landlock to it, its output and the system's libraries.
//! The job itself is in `import.rs`.

use std::path::PathBuf;

use ciborium::Value;

use super::{answer, blocking, Engine};
use crate::error::{Error, Result};
use crate::model::image_format;
use crate::model::{Outcome, ShareState};
use crate::proto::{Answer, ImageRef, PoolFilter};
use crate::store::{self, Image};

/// The formats' names, for messages.
pub(super) fn format_names() -> String {
    image_format::FORMATS
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

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

impl Engine {
    /// `image.list`: the cached images (of one pool, or all).
    pub(super) async fn list_images(&self, a: PoolFilter) -> Result<Vec<Image>> {
        self.store
            .call(move |c| store::list_images(c, a.pool.as_deref()))
            .await
    }

    /// `image.show`: one image, with `shares_made`, how many shares were made from it.
    pub(super) async fn show_image(&self, a: ImageRef) -> Result<Answer> {
        let (image, shares) = self
            .store
            .call(move |c| {
                let i = store::find_image(c, &a.image, a.pool.as_deref())?;
                let n = store::count_shares_from_image(c, &i.id)?;
                Ok((i, n))
            })
            .await?;
        Ok(answer(Answer::read(&image))?.with("shares_made", Value::Integer(shares.into())))
    }

    /// `image.delete`: remove a cached image (shares made from it are independent).
    pub(super) async fn delete_image(&self, a: ImageRef) -> Result<Outcome<String>> {
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
        Ok(Outcome::Deleted(image.id))
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
        match crate::sys::landlock::abi_version() {
            Some(v) => log::info!("images: Landlock ABI {v}; qemu-img runs confined"),
            None => {
                log::warn!("images: this kernel has no Landlock; only raw images can be imported")
            }
        }
        let failed = self.store.write(|c| store::fail_running_jobs(c)).await?;
        let mut out = Vec::new();
        if failed > 0 {
            out.push(format!(
                "{failed} job(s) were interrupted by the restart: marked failed"
            ));
        }
        let images = self.store.call(|c| store::list_images(c, None)).await?;
        let names = self.pool_names();
        // Staging files of unfinished uploads and exports go: they do not outlive a run.
        for name in &names {
            if let Some(dir) = self.pool(name)?.images_dir() {
                blocking(move || {
                    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.starts_with(".upload-") || name.starts_with(".export-") {
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
}
