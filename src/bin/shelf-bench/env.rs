//! The bench's private world: a scratch XFS on a loop device, private tgtd instances, a
//! private exports file, and its own shelfd, all from the tests' rig
//! (`tests/common/rig/`). Each piece undoes itself on drop, and also registers that undo
//! in one cleanup list, run at the end, on a panic (the guard in `main`) and on
//! SIGINT/SIGTERM (the signal thread, where nothing is dropped), so an interrupted run
//! leaves no mount, process or export behind.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shelf::client::Client;

type Teardown = (&'static str, Box<dyn FnOnce() + Send>);

/// Teardowns, newest last; run in reverse order.
static CLEANUP: Mutex<Vec<Teardown>> = Mutex::new(Vec::new());

/// Register a teardown, named for the log.
pub fn on_cleanup(what: &'static str, f: impl FnOnce() + Send + 'static) {
    CLEANUP
        .lock()
        .expect("cleanup lock")
        .push((what, Box::new(f)));
}

/// Held while teardowns run, so a second caller (main after a signal) waits for the
/// first to finish instead of exiting under it.
static RUNNING: Mutex<()> = Mutex::new(());

/// Run every teardown, newest first. Safe to call more than once and from two threads.
pub fn run_all() {
    let _running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let f = CLEANUP.lock().map(|mut l| l.pop()).unwrap_or(None);
        match f {
            Some((what, f)) => {
                let t0 = Instant::now();
                f();
                let took = t0.elapsed();
                if took > Duration::from_secs(1) {
                    eprintln!(
                        "shelf-bench: cleanup: {what} took {:.1} s",
                        took.as_secs_f64()
                    );
                }
            }
            None => return,
        }
    }
}

/// Runs every teardown when dropped (normal end and panics in `main`).
#[derive(Debug)]
pub struct CleanupGuard;

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        run_all();
    }
}

/// Handle SIGINT/SIGTERM/SIGHUP on a thread of their own: tear everything down and exit
/// with 130. (Handlers, not a blocked mask: a mask would be inherited by shelfd and tgtd,
/// and shelfd would then never see the SIGTERM that stops it.)
pub fn handle_signals() -> Res<()> {
    use async_signal::{Signal, Signals};
    use futures_lite::StreamExt;
    let mut signals = Signals::new([Signal::Int, Signal::Term, Signal::Hup])
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(Ok(sig)) = smol::block_on(signals.next()) {
                eprintln!("shelf-bench: {sig:?}: cleaning up");
                run_all();
                std::process::exit(130);
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    Ok(())
}

pub use crate::rig::{path_str, sh, ExportsFile, Res, Shelfd, Tgtd, Xfs};

/// The scratch XFS (reflink) of `size` bytes in /var/tmp/shelf-bench-<pid>, which also
/// holds the configs, state and logs; unmounted and removed at the end.
pub fn scratch_xfs(size: u64) -> Res<Xfs> {
    let dir = PathBuf::from(format!("/var/tmp/shelf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let x = Xfs::format(dir, size, true)?;
    on_cleanup("unmounting and removing the scratch XFS", x.teardown());
    Ok(x)
}

/// A private tgtd with control port `control`, in a process group of its own (the
/// bench tears down in order on ^C). Four I/O threads per LUN instead of 16: each thread
/// costs tgtd two memory maps, and with 16 the default vm.max_map_count (65530) stops
/// tgtd at ~2,000 LUNs ("tgtadm: out of memory"). See docs/performance.md.
pub fn tgtd(control: u32) -> Res<Tgtd> {
    let t = Tgtd::launch(crate::rig::free_port()?, control, Some(4), true)?;
    on_cleanup("stopping tgtd", t.teardown());
    Ok(t)
}

/// The bench's exports file `tag` under /etc/exports.d; removed (and exportfs re-synced)
/// at the end.
pub fn exports_file(tag: &str) -> Res<ExportsFile> {
    let e = ExportsFile::named(&format!("shelf-bench-{tag}-{}", std::process::id()))?;
    on_cleanup("removing an exports file", e.teardown());
    Ok(e)
}

impl Shelfd {
    /// Write the config into `dir/shelf.toml` and start shelfd (warnings logged to
    /// `dir/shelfd.log`, its own process group); returns once `hello` answers.
    pub fn start(
        binary: &Path,
        dir: &Path,
        config_text: &str,
        env: Vec<(String, String)>,
    ) -> Res<Shelfd> {
        let config = dir.join("shelf.toml");
        std::fs::write(&config, config_text).map_err(|e| e.to_string())?;
        let mut d = Shelfd::new(
            binary.to_path_buf(),
            config,
            dir.join("state"),
            dir.join("run").join("shelf.sock"),
            dir.join("shelfd.log"),
        );
        d.rust_log = "warn".into();
        d.env = env;
        d.ready_within = Duration::from_secs(120);
        d.stop_within = Duration::from_secs(40);
        d.own_group = true;
        on_cleanup("stopping shelfd", d.teardown());
        d.spawn(&[])?;
        d.await_ready()
            .map_err(|e| format!("{e}:\n{}", d.log_tail(30)))?;
        Ok(d)
    }

    /// Stop (SIGTERM) and start again; returns the time from spawn until `hello` answers.
    pub fn restart(&self) -> Res<Duration> {
        self.terminate();
        let t0 = Instant::now();
        self.spawn(&[])?;
        self.await_ready()
            .map_err(|e| format!("{e}:\n{}", self.log_tail(30)))?;
        Ok(t0.elapsed())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child_pid()
    }

    /// A new connection.
    pub fn client(&self) -> Res<Client> {
        let c = Client::connect(&self.socket).map_err(|e| e.to_string())?;
        c.set_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// Resident and peak resident size of a process, in bytes (VmRSS, VmHWM).
pub fn memory(pid: u32) -> Res<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let field = |name: &str| -> Res<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
