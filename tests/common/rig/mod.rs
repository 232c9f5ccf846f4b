//! The rig: the private world shelfd runs in for every integration test and for
//! shelf-bench. A scratch XFS on a loop device ([`Xfs`]), a private tgtd on 127.0.0.1
//! ([`Tgtd`]), a private exports file under /etc/exports.d ([`ExportsFile`]) and a shelfd
//! ([`Shelfd`]). Each piece undoes itself in `Drop`, so a failing test or an aborted
//! bench leaves no mount, process or export behind; [`Shelfd::teardown`] and its kin hand
//! the same undo to a caller that must run it from elsewhere (the bench's signal thread).
//!
//! This file is not part of the library: the integration tests include it as
//! `tests/common/rig/` and shelf-bench as
//! `#[path = "../../../tests/common/rig/mod.rs"] mod rig;`, so the shipped daemon's API
//! carries no test rig. It therefore depends only on what both see: the `shelf` crate and
//! its normal dependencies (no dev-dependencies, no `CARGO_BIN_EXE_*`). Errors are
//! messages (`Res`); the tests' `common` panics on them, the bench reports them.

pub mod daemon;
pub mod exports;
pub mod tgtd;
pub mod xfs;

pub use daemon::Shelfd;
pub use exports::ExportsFile;
pub use tgtd::Tgtd;
pub use xfs::Xfs;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A result whose error is a message for a person.
pub type Res<T> = Result<T, String>;

/// Run a command to completion (no stdin); its stdout, or an error with its output.
pub fn sh(argv: &[&str]) -> Res<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {argv:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{argv:?} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A path as &str (the rig only makes UTF-8 paths).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// A child process shared between its owner and a teardown handle; `None` when stopped.
pub type SharedChild = Arc<Mutex<Option<Child>>>;

/// SIGKILL the child, if any, and reap it.
pub fn kill_child(c: &SharedChild) {
    if let Some(mut child) = c.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// SIGTERM the child, if any, and wait `within` for it, then SIGKILL; its exit status.
pub fn stop_child(c: &SharedChild, within: Duration) -> Option<std::process::ExitStatus> {
    let mut child = c.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// An undo that runs once, from whichever comes first: its owner's `Drop` or a handle
/// run elsewhere.
#[derive(Clone)]
pub struct Once(Arc<Mutex<Option<Undo>>>);

/// What a [`Once`] runs.
type Undo = Box<dyn FnOnce() + Send>;

impl Once {
    /// Wrap `f`.
    pub fn new(f: impl FnOnce() + Send + 'static) -> Once {
        Once(Arc::new(Mutex::new(Some(Box::new(f)))))
    }

    /// Run it, unless it ran already.
    pub fn run(&self) {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = f {
            f();
        }
    }

    /// A handle that runs it (unless it ran already), for a cleanup list.
    pub fn handle(&self) -> impl FnOnce() + Send + 'static {
        let u = self.clone();
        move || u.run()
    }
}

impl std::fmt::Debug for Once {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Once")
    }
}
