//! The textfile: the exposition written for node_exporter's textfile collector every
//! `metrics.textfile_interval` seconds, atomically (a temporary file beside it, then a
//! rename), mode 0644, removed when shelfd stops so a stopped daemon's figures do not
//! linger.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::collect::Collector;

/// The temporary file's name: hidden and without `.prom`, so node_exporter never reads a
/// half-written file.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Replace `path` with `bytes`: write a new file (never following a link planted at the
/// temporary name), give it mode 0644 whatever the umask, rename it into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let written = f
        .write_all(bytes)
        .and_then(|_| f.set_permissions(std::fs::Permissions::from_mode(0o644)));
    drop(f);
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Write the textfile now and every `every` until `stop` closes; then remove it. A failed
/// write is logged once until one succeeds again.
pub async fn write_every(
    path: PathBuf,
    every: Duration,
    collector: Arc<Collector>,
    stop: smol::channel::Receiver<()>,
) {
    let mut failing = false;
    loop {
        let text = collector.text().await;
        let p = path.clone();
        match smol::unblock(move || write_atomically(&p, text.as_bytes())).await {
            Ok(()) if failing => {
                log::info!("metrics: writing {} works again", path.display());
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                log::warn!("metrics: cannot write {}: {e}", path.display());
                failing = true;
            }
            Err(_) => {}
        }
        if !crate::server::tick_or_stop(every, &stop).await {
            break;
        }
    }
    let p = path.clone();
    let _ = smol::unblock(move || std::fs::remove_file(p)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_with_mode_0644() {
        let dir = std::env::temp_dir().join(format!("shelf-textfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shelf.prom");
        // A link planted at the temporary name is removed, not followed.
        let target = dir.join("target");
        std::os::unix::fs::symlink(&target, temp_path(&path)).unwrap();
        write_atomically(&path, b"a 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&path, b"a 2\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(!target.exists());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("shelf.prom")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
