//! A shelfd of the rig's: its binary, config, state directory, socket and log; started,
//! stopped, killed and started again on the same state; stopped on drop.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shelf::client::{args, Client};

use super::{kill_child, stop_child, Res, SharedChild};

/// A shelfd (not running until [`Shelfd::spawn`]).
#[derive(Debug)]
pub struct Shelfd {
    /// Its state directory (the database lives there).
    pub state: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Where its stderr goes (appended across restarts).
    pub log: PathBuf,
    /// The program.
    pub binary: PathBuf,
    /// `RUST_LOG` for it.
    pub rust_log: String,
    /// Environment given at every start.
    pub env: Vec<(String, String)>,
    /// How long a start may take until `hello` answers.
    pub ready_within: Duration,
    /// How long a SIGTERM may take before SIGKILL.
    pub stop_within: Duration,
    /// Whether it runs in a process group of its own (so a terminal's ^C reaches only the
    /// caller, which then stops it in order).
    pub own_group: bool,
    child: SharedChild,
}

impl Shelfd {
    /// A shelfd of `binary` with `config`, `state` and `socket` (as the config says) and
    /// `log`; debug logging, 20 s to start and to stop, in the caller's process group.
    pub fn new(
        binary: PathBuf,
        config: PathBuf,
        state: PathBuf,
        socket: PathBuf,
        log: PathBuf,
    ) -> Shelfd {
        Shelfd {
            state,
            socket,
            config,
            log,
            binary,
            rust_log: "debug".into(),
            env: Vec::new(),
            ready_within: Duration::from_secs(20),
            stop_within: Duration::from_secs(20),
            own_group: false,
            child: Arc::new(Mutex::new(None)),
        }
    }

    /// Start the process with `extra` environment (after [`Shelfd::env`]); does not wait.
    pub fn spawn(&self, extra: &[(&str, &str)]) -> Res<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if self.own_group {
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        *self.child.lock().expect("child lock") = Some(child);
        Ok(())
    }

    /// Wait until the socket answers `hello`; the time waited. The error says whether it
    /// exited or never answered (the caller adds as much of the log as it wants).
    pub fn await_ready(&self) -> Res<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < self.ready_within {
            if let Ok(mut c) = Client::connect(&self.socket) {
                if c.call("hello", args(vec![])).is_ok() {
                    return Ok(t0.elapsed());
                }
            }
            if let Some(st) = self.try_exit() {
                return Err(format!("shelfd exited early ({st})"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err("shelfd did not become ready".into())
    }

    /// Its exit status if it has exited (it is then no longer running).
    fn try_exit(&self) -> Option<ExitStatus> {
        let mut guard = self.child.lock().expect("child lock");
        let st = guard.as_mut()?.try_wait().ok()??;
        *guard = None;
        Some(st)
    }

    /// Whether a process was started and not stopped, killed or reaped since.
    pub fn is_running(&self) -> bool {
        self.child.lock().expect("child lock").is_some()
    }

    /// SIGTERM and wait ([`Shelfd::stop_within`], then SIGKILL); `None` if not running.
    pub fn terminate(&self) -> Option<ExitStatus> {
        stop_child(&self.child, self.stop_within)
    }

    /// SIGKILL (a crash) and reap.
    pub fn crash(&self) {
        kill_child(&self.child);
    }

    /// Wait up to `within` for the process to exit by itself (e.g. at a failpoint); the
    /// error (after a SIGKILL) says it did not.
    pub fn await_exit(&self, within: Duration) -> Res<ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Some(st) = self.try_exit() {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.crash();
        Err("shelfd did not exit".into())
    }

    /// The process id, while running.
    pub fn child_pid(&self) -> Option<u32> {
        self.child
            .lock()
            .expect("child lock")
            .as_ref()
            .map(|c| c.id())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `shelfd recover --rebuild-db` with `extra` flags on this config: whether it
    /// succeeded, and its stdout and stderr.
    pub fn rebuild_db(&self, extra: &[&str]) -> Res<(bool, String)> {
        let out = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .args(["recover", "--rebuild-db"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {} recover: {e}", self.binary.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.success(), text))
    }

    /// The undo (stop it), for a caller that must be able to run it from elsewhere.
    pub fn teardown(&self) -> impl FnOnce() + Send + 'static {
        let (c, within) = (self.child.clone(), self.stop_within);
        move || {
            stop_child(&c, within);
        }
    }
}

impl Drop for Shelfd {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            eprintln!("---- shelfd log ----\n{}", self.log_text());
        }
    }
}
