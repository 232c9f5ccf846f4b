//! A test's shelfd: the rig's [`Shelfd`] with the calls tests make (panicking with the
//! log when something is off), and [`Layout`], where it keeps its files.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use ciborium::Value;
use shelf::client::{args, Client, ClientError};

use super::rig::{Shelfd, Xfs};
use super::world::free_control_port;

/// A running shelfd with its own state directory and socket (the rig's; stopped on drop,
/// its log printed when the test is failing).
pub type Daemon = Shelfd;

/// Where a test's daemon keeps its files.
#[derive(Debug)]
pub struct Layout {
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Layout {
    /// State under `base/state`, socket under `base/run/shelf.sock`, and a config with the
    /// given extra TOML (pools and so on).
    pub fn new(base: &Path, extra: &str) -> Layout {
        let state = base.join("state");
        let socket = base.join("run").join("shelf.sock");
        let config = base.join("shelf.toml");
        let mut text = format!(
            "state_dir = {:?}\nsocket = {:?}\n{extra}\n",
            state.display().to_string(),
            socket.display().to_string()
        );
        // Never touch the machine's own exports file, ganesha or tgtd: unless a test says
        // otherwise, every driver points at something private and absent.
        if !extra.contains("[nfs]") {
            text.push_str(&format!(
                "[nfs]\nexports_file = {:?}\nganesha_exports = {:?}\nganesha_pidfile = {:?}\n",
                base.join("unused.exports").display().to_string(),
                base.join("unused-ganesha.conf").display().to_string(),
                base.join("unused-ganesha.pid").display().to_string()
            ));
        }
        if !extra.contains("[iscsi]") {
            text.push_str(&format!(
                "[iscsi]\ntgt_control_port = {}\n",
                9000 + free_control_port()
            ));
        }
        if !extra.contains("[nvme]") {
            text.push_str(&format!(
                "[nvme]\nconfigfs = {:?}\n",
                base.join("unused-nvmet").display().to_string()
            ));
        }
        std::fs::write(&config, text).unwrap();
        Layout {
            state,
            socket,
            config,
        }
    }

    /// A config whose default pool is `<mount>/pool`.
    pub fn on_xfs(xfs: &Xfs, extra: &str) -> Layout {
        let pool = xfs.mount.join("pool");
        Layout::new(
            xfs.base(),
            &format!(
                "{extra}\n[pools.default]\npath = {:?}\n",
                pool.display().to_string()
            ),
        )
    }
}

impl Shelfd {
    /// Run the `shelfctl` this test was built with against this daemon's socket; its
    /// output, whatever the exit status.
    pub fn shelfctl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_shelfctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Start shelfd on a layout and wait until its socket answers.
    pub fn start(layout: &Layout) -> Daemon {
        Self::start_with_env(layout, &[])
    }

    /// Start with extra environment variables (e.g. a failpoint).
    pub fn start_with_env(layout: &Layout, env: &[(&str, &str)]) -> Daemon {
        let mut d = Shelfd::new(
            PathBuf::from(env!("CARGO_BIN_EXE_shelfd")),
            layout.config.clone(),
            layout.state.clone(),
            layout.socket.clone(),
            layout.config.with_extension("log"),
        );
        d.restart_with_env(env);
        d
    }

    /// Wait until the socket accepts a hello, or panic with the log.
    pub fn wait_ready(&mut self) {
        if let Err(e) = self.await_ready() {
            panic!("{e}:\n{}", self.log_text());
        }
    }

    /// A new client connection.
    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect")
    }

    /// One call on a fresh connection.
    pub fn call(&self, op: &str, a: Vec<(&str, Value)>) -> Result<Value, ClientError> {
        self.client().call(op, args(a))
    }

    /// One call that must succeed.
    pub fn ok(&self, op: &str, a: Vec<(&str, Value)>) -> Value {
        self.call(op, a)
            .unwrap_or_else(|e| panic!("{op} failed: {e}\n{}", self.log_text()))
    }

    /// One call that must fail with `code`; returns the message.
    pub fn err(&self, op: &str, a: Vec<(&str, Value)>, code: &str) -> String {
        match self.call(op, a) {
            Ok(v) => panic!("{op} succeeded ({v:?}) but {code} was expected"),
            Err(ClientError::Remote(e)) => {
                assert_eq!(e.code, code, "{op}: {}", e.message);
                e.message
            }
            Err(e) => panic!("{op}: {e}"),
        }
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.child_pid().expect("running") as i32
    }

    /// Send a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate().expect("running")
    }

    /// SIGKILL (a crash) and wait.
    pub fn kill(&mut self) {
        assert!(self.is_running(), "running");
        self.crash();
    }

    /// Wait for the process to exit by itself (e.g. at a failpoint).
    pub fn wait_exit(&mut self) -> ExitStatus {
        assert!(self.is_running(), "running");
        self.await_exit(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}:\n{}", self.log_text()))
    }

    /// Start again on the same state (after stop, kill or a failpoint).
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// Start again with extra environment that makes shelfd exit before it serves (e.g. a
    /// failpoint in start-up recovery); returns its exit status.
    pub fn restart_until_exit(&mut self, env: &[(&str, &str)]) -> ExitStatus {
        assert!(!self.is_running(), "stop it first");
        self.spawn(env).unwrap_or_else(|e| panic!("{e}"));
        self.wait_exit()
    }

    /// Start again with extra environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(!self.is_running(), "stop it first");
        self.spawn(env).unwrap_or_else(|e| panic!("{e}"));
        self.wait_ready();
    }

    /// Stop the daemon if it runs, and lose its database: its WAL and shared memory go,
    /// and the database file is replaced by `garbage`, or removed when `None`.
    pub fn lose_db(&mut self, garbage: Option<&[u8]>) {
        if self.is_running() {
            self.stop();
        }
        let db = self.state.join("shelf.db");
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        match garbage {
            Some(bytes) => std::fs::write(&db, bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(&db);
            }
        }
    }

    /// `shelfd recover --rebuild-db` with `extra` flags: whether it succeeded, and its
    /// output (stdout, then stderr).
    pub fn try_rebuild(&self, extra: &[&str]) -> (bool, String) {
        self.rebuild_db(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `shelfd recover --rebuild-db` with `extra` flags, which must succeed; its output
    /// (also printed).
    pub fn rebuild(&self, extra: &[&str]) -> String {
        let (ok, text) = self.try_rebuild(extra);
        eprintln!("rebuild {extra:?}:\n{text}");
        assert!(ok, "{text}");
        text
    }
}
