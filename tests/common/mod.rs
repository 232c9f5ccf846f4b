//! Test harness: a scratch XFS (reflink) on a loop device, a real shelfd on it, and a
//! client. Everything is torn down in `Drop`, so a failing test leaves no mount or process.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ciborium::Value;
use shelf::client::{args, get, get_text, Client, ClientError};

/// Run a command, panicking with its output if it fails.
pub fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory removed on drop.
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("shelf-test-{tag}-"))
        .tempdir_in("/var/tmp")
        .expect("scratch dir")
}

/// A loop-mounted XFS with reflink, made for one test.
#[derive(Debug)]
pub struct Xfs {
    dir: tempfile::TempDir,
    pub mount: PathBuf,
}

impl Xfs {
    /// Make and mount an XFS of `size` bytes (sparse image).
    pub fn new(tag: &str, size: u64) -> Xfs {
        let dir = scratch(tag);
        let image = dir.path().join("xfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size)
            .unwrap();
        sh(&["mkfs.xfs", "-q", "-m", "reflink=1", image.to_str().unwrap()]);
        sh(&[
            "mount",
            "-o",
            "loop",
            image.to_str().unwrap(),
            mount.to_str().unwrap(),
        ]);
        Xfs { dir, mount }
    }

    /// The directory of the scratch (holds the image and the mount point).
    pub fn base(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let m = self.mount.to_str().unwrap().to_string();
        for _ in 0..50 {
            if Command::new("umount")
                .arg(&m)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").args(["-l", &m]).status();
    }
}

/// A running shelfd with its own state directory and socket.
#[derive(Debug)]
pub struct Daemon {
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

/// Where a test's daemon keeps its files.
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
        let text = format!(
            "state_dir = {:?}\nsocket = {:?}\n{extra}\n",
            state.display().to_string(),
            socket.display().to_string()
        );
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
                "[pools.default]\npath = {:?}\n{extra}",
                pool.display().to_string()
            ),
        )
    }
}

impl Daemon {
    /// Start shelfd on a layout and wait until its socket answers.
    pub fn start(layout: &Layout) -> Daemon {
        Self::start_with_env(layout, &[])
    }

    /// Start with extra environment variables (e.g. a failpoint).
    pub fn start_with_env(layout: &Layout, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon {
            state: layout.state.clone(),
            socket: layout.socket.clone(),
            config: layout.config.clone(),
            child: None,
            log: layout.config.with_extension("log"),
        };
        d.spawn(env);
        d.wait_ready();
        d
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shelfd"));
        cmd.arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start shelfd"));
    }

    /// Wait until the socket accepts a hello, or panic with the log.
    pub fn wait_ready(&mut self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(mut c) = Client::connect(&self.socket) {
                if c.call("hello", args(vec![])).is_ok() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("shelfd exited early ({status}):\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("shelfd did not become ready:\n{}", self.log_text());
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
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
        self.child.as_ref().unwrap().id() as i32
    }

    /// Send a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t0 = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (a crash) and wait.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Wait for the process to exit by itself (e.g. at a failpoint).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let t0 = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("shelfd did not exit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Start again on the same state (after stop, kill or a failpoint).
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// Start again with extra environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn(env);
        self.wait_ready();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        if std::thread::panicking() {
            eprintln!("---- shelfd log ----\n{}", self.log_text());
        }
    }
}

/// Text value.
pub fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Integer value.
pub fn n(x: u64) -> Value {
    Value::Integer(x.into())
}

/// Field `key` of a map as text.
pub fn field(v: &Value, key: &str) -> String {
    get_text(v, key)
        .unwrap_or_else(|| panic!("no text {key} in {v:?}"))
        .to_string()
}

/// Sub-map `key`.
pub fn sub<'a>(v: &'a Value, key: &str) -> &'a Value {
    get(v, key).unwrap_or_else(|| panic!("no {key} in {v:?}"))
}

/// The volume file of a share in a file pool.
pub fn volume(pool_dir: &Path, share_id: &str) -> PathBuf {
    pool_dir.join("shares").join(share_id).join("volume")
}

/// Write `data` at `offset` of a file, and fsync.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Read `len` bytes at `offset` of a file.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// A recognisable pattern of `len` bytes seeded by `seed`.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
