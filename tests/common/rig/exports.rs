//! A private exports file under /etc/exports.d (exportfs reads only that directory): the
//! name is the rig's, the contents shelfd's. Removed, and exportfs re-synced, on drop.

use std::path::PathBuf;
use std::process::Command;

use super::{Once, Res};

/// A shelf-owned exports file for one test or bench run.
#[derive(Debug)]
pub struct ExportsFile {
    /// The file shelfd owns.
    pub path: PathBuf,
    undo: Once,
}

impl ExportsFile {
    /// `/etc/exports.d/<name>.exports` (the file itself is written by shelfd).
    pub fn named(name: &str) -> Res<ExportsFile> {
        std::fs::create_dir_all("/etc/exports.d").map_err(|e| format!("/etc/exports.d: {e}"))?;
        let path = PathBuf::from(format!("/etc/exports.d/{name}.exports"));
        let p = path.clone();
        let undo = Once::new(move || {
            let _ = std::fs::remove_file(&p);
            let _ = Command::new("exportfs").arg("-r").output();
        });
        Ok(ExportsFile { path, undo })
    }

    /// Config lines pointing shelfd's kernel NFS driver at this file, host 127.0.0.1.
    pub fn config(&self) -> String {
        format!(
            "[nfs]\nexports_file = {:?}\nhost = \"127.0.0.1\"\n",
            self.path.display().to_string()
        )
    }

    /// The undo (remove the file, `exportfs -r`), for a caller that must be able to run
    /// it from elsewhere; it runs once.
    pub fn teardown(&self) -> impl FnOnce() + Send + 'static {
        self.undo.handle()
    }
}

impl Drop for ExportsFile {
    fn drop(&mut self) {
        self.undo.run();
    }
}
