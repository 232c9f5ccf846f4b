//! A scratch filesystem on a loop device: a sparse image in a directory of its own,
//! formatted, mounted on `<dir>/mnt`; unmounted and the directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{path_str, sh, Once, Res};

/// A loop-mounted filesystem (XFS with reflink unless made otherwise) in `dir`.
#[derive(Debug)]
pub struct Xfs {
    /// Where it is mounted (`<dir>/mnt`).
    pub mount: PathBuf,
    dir: PathBuf,
    undo: Once,
}

impl Xfs {
    /// In the existing directory `dir` (which the rig removes at the end): a sparse image
    /// `image` of `size` bytes formatted by `mkfs` (the image's path is appended), and
    /// mounted on `<dir>/mnt`.
    pub fn make(dir: PathBuf, image: &str, size: u64, mkfs: &[&str]) -> Res<Xfs> {
        let mount = dir.join("mnt");
        let mounted = Arc::new(AtomicBool::new(false));
        let undo = {
            let (m, d, mounted) = (mount.clone(), dir.clone(), mounted.clone());
            Once::new(move || {
                if mounted.load(Ordering::SeqCst) {
                    unmount_patiently(&m);
                }
                let _ = std::fs::remove_dir_all(&d);
            })
        };
        // From here on a failure drops `x`, which removes the directory again.
        let x = Xfs {
            mount: mount.clone(),
            dir: dir.clone(),
            undo,
        };
        let image = dir.join(image);
        std::fs::create_dir_all(&mount).map_err(|e| format!("{}: {e}", mount.display()))?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| format!("{}: {e}", image.display()))?;
        let mut argv = mkfs.to_vec();
        argv.push(path_str(&image));
        sh(&argv)?;
        sh(&["mount", "-o", "loop", path_str(&image), path_str(&mount)])?;
        mounted.store(true, Ordering::SeqCst);
        Ok(x)
    }

    /// An XFS of `size` bytes, with or without reflink, in `dir`.
    pub fn format(dir: PathBuf, size: u64, reflink: bool) -> Res<Xfs> {
        let reflink = if reflink { "reflink=1" } else { "reflink=0" };
        Xfs::make(dir, "xfs.img", size, &["mkfs.xfs", "-q", "-m", reflink])
    }

    /// The directory of the scratch (holds the image, the mount point, and whatever the
    /// caller puts there: configs, state, logs).
    pub fn base(&self) -> &Path {
        &self.dir
    }

    /// The undo (unmount, remove the directory), for a caller that must be able to run
    /// it from elsewhere; it runs once.
    pub fn teardown(&self) -> impl FnOnce() + Send + 'static {
        self.undo.handle()
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        self.undo.run();
    }
}

/// Unmount `mount`, retrying for 5 s while it is busy, then lazily.
pub fn unmount_patiently(mount: &Path) {
    for _ in 0..50 {
        let ok = Command::new("umount")
            .arg(mount)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{} still busy after 5 s; unmounting lazily",
        mount.display()
    );
    let _ = Command::new("umount").arg("-l").arg(mount).output();
}
