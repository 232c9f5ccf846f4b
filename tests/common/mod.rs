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
        Xfs::with_reflink(tag, size, true)
    }

    /// Make and mount an XFS of `size` bytes, with or without reflink support.
    pub fn with_reflink(tag: &str, size: u64, reflink: bool) -> Xfs {
        let reflink = if reflink { "reflink=1" } else { "reflink=0" };
        let (dir, mount) = loop_mounted(tag, "xfs.img", size, &["mkfs.xfs", "-q", "-m", reflink]);
        Xfs { dir, mount }
    }

    /// The directory of the scratch (holds the image and the mount point).
    pub fn base(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        unmount_patiently(&self.mount);
    }
}

/// A new scratch directory holding a sparse image `image` of `size` bytes, formatted by
/// `mkfs` (the image's path is appended) and loop-mounted on its `mnt`; (scratch, mount).
pub fn loop_mounted(
    tag: &str,
    image: &str,
    size: u64,
    mkfs: &[&str],
) -> (tempfile::TempDir, PathBuf) {
    let dir = scratch(tag);
    let image = dir.path().join(image);
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(size)
        .unwrap();
    let mut argv = mkfs.to_vec();
    argv.push(image.to_str().unwrap());
    sh(&argv);
    sh(&[
        "mount",
        "-o",
        "loop",
        image.to_str().unwrap(),
        mount.to_str().unwrap(),
    ]);
    (dir, mount)
}

/// Unmount `mount`, retrying for 5 s while it is busy, then lazily.
pub fn unmount_patiently(mount: &Path) {
    let m = mount.to_str().unwrap().to_string();
    for _ in 0..50 {
        if Command::new("umount")
            .arg(&m)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{m} still busy after 5 s; unmounting lazily");
    let _ = Command::new("umount").args(["-l", &m]).output();
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

    /// Start again with extra environment that makes shelfd exit before it serves (e.g. a
    /// failpoint in start-up recovery); returns its exit status.
    pub fn restart_until_exit(&mut self, env: &[(&str, &str)]) -> std::process::ExitStatus {
        assert!(self.child.is_none(), "stop it first");
        self.spawn(env);
        self.wait_exit()
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

/// Wait for a job to end; returns its final state.
pub fn wait_job(d: &Daemon, job: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v = d.ok("job.show", vec![("job", t(job))]);
        if get_text(&v, "state") != Some("running") {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job {job} hangs: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
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

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test's daemon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tgtd control port no other test uses at the same time.
pub fn free_control_port() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    2000 + (std::process::id() % 500) * 16 + NEXT.fetch_add(1, Ordering::SeqCst) % 16
}

/// A private tgtd on 127.0.0.1:<port>, control port `-C <control>`; killed on drop.
#[derive(Debug)]
pub struct Tgtd {
    pub port: u16,
    pub control: u32,
    child: Option<Child>,
}

impl Tgtd {
    /// Start a tgtd and wait until tgtadm reaches it.
    pub fn start() -> Tgtd {
        let mut t = Tgtd {
            port: free_port(),
            control: free_control_port(),
            child: None,
        };
        t.spawn();
        t
    }

    fn spawn(&mut self) {
        let child = Command::new("tgtd")
            .args(["-f", "-C", &self.control.to_string(), "--iscsi"])
            .arg(format!("portal=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tgtd (package tgt)");
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if self.tgtadm(&["--op", "show", "--mode", "sys"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tgtd on control port {} did not come up", self.control);
    }

    /// Run tgtadm against this tgtd.
    pub fn tgtadm(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("tgtadm")
            .args(["--lld", "iscsi", "-C", &self.control.to_string()])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `tgtadm --op show --mode target`.
    pub fn show(&self) -> String {
        self.tgtadm(&["--op", "show", "--mode", "target"]).unwrap()
    }

    /// Send a signal to tgtd (SIGSTOP makes every tgtadm hang until SIGCONT; Drop's SIGKILL
    /// still ends a stopped tgtd).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("tgtd running").id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// Kill tgtd (it loses every target); `restart` starts a fresh one on the same ports.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Kill tgtd (it loses every target) and start a fresh one on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Config lines pointing shelfd at this tgtd.
    pub fn config(&self) -> String {
        format!(
            "[iscsi]\nportal = \"127.0.0.1:{}\"\ntgt_control_port = {}\niqn_prefix = \"iqn.2026-11.org.example.shelf\"\n",
            self.port, self.control
        )
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A shelf-owned exports file for one test under /etc/exports.d, removed (and exportfs
/// re-synced) on drop.
#[derive(Debug)]
pub struct ExportsFile {
    pub path: PathBuf,
}

impl ExportsFile {
    /// A fresh file name (the file itself is written by shelfd).
    pub fn new(tag: &str) -> ExportsFile {
        std::fs::create_dir_all("/etc/exports.d").unwrap();
        ExportsFile {
            path: PathBuf::from(format!(
                "/etc/exports.d/shelf-test-{tag}-{}-{}.exports",
                std::process::id(),
                free_port()
            )),
        }
    }

    /// Config lines pointing shelfd at this file.
    pub fn config(&self) -> String {
        format!(
            "[nfs]\nexports_file = {:?}\nhost = \"127.0.0.1\"\n",
            self.path.display().to_string()
        )
    }
}

impl Drop for ExportsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = Command::new("exportfs").arg("-r").status();
    }
}

/// `exportfs -v` as (path, client, options).
pub fn exportfs_v() -> Vec<(String, String, String)> {
    shelf::export::nfs_kernel::parse_exportfs_v(&sh(&["exportfs", "-v"]))
}

/// Run a command and return (success, stdout, stderr).
pub fn try_run(argv: &[&str]) -> (bool, String, String) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A private nfs-ganesha (NFSv4 only, no rpcbind) on 127.0.0.1:<port>, exporting what
/// shelfd writes into `exports`; stopped on drop.
#[derive(Debug)]
pub struct Ganesha {
    pub port: u16,
    pub exports: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Ganesha {
    /// Start ganesha.nfsd and wait until it answers an NFS client.
    pub fn start() -> Ganesha {
        let dir = scratch("ganesha");
        let d = dir.path();
        for sub in ["recov", "run", "run/ccache"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let port = free_port();
        let exports = d.join("run/shelf-exports.conf");
        std::fs::write(&exports, "# empty until shelfd writes it\n").unwrap();
        let conf = d.join("run/ganesha.conf");
        std::fs::write(
            &conf,
            format!(
                "NFS_CORE_PARAM {{ Bind_addr = 127.0.0.1; NFS_Port = {port}; Protocols = 4;\n\
                 Enable_RQUOTA = false; Enable_NLM = false; Enable_UDP = false; }}\n\
                 NFSv4 {{ RecoveryBackend = fs; RecoveryRoot = \"{}\"; Graceless = true;\n\
                 Lease_Lifetime = 10; Only_Numeric_Owners = true; }}\n\
                 NFS_KRB5 {{ Active_krb5 = false; CCacheDir = \"{}\"; }}\n\
                 LOG {{ Default_Log_Level = EVENT; }}\n\
                 %include \"{}\"\n",
                d.join("recov").display(),
                d.join("run/ccache").display(),
                exports.display()
            ),
        )
        .unwrap();
        let pidfile = d.join("run/ganesha.pid");
        let log = d.join("run/ganesha.log");
        let child = Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(&pidfile)
            .arg("-L")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ganesha.nfsd (package nfs-ganesha)");
        let g = Ganesha {
            port,
            exports,
            pidfile,
            log,
            child: Some(child),
            _dir: dir,
        };
        let t0 = Instant::now();
        loop {
            if try_run(&["nfs-ls", &g.url("/")]).0 && g.pidfile.exists() {
                return g;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "ganesha did not come up:\n{}",
                std::fs::read_to_string(&g.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An NFSv4 URL for a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("nfs://127.0.0.1{path}?version=4&nfsport={}", self.port)
    }

    /// Config lines pointing shelfd at this ganesha.
    pub fn config(&self) -> String {
        format!(
            "[nfs]\ndriver = \"ganesha\"\nganesha_exports = {:?}\nganesha_pidfile = {:?}\nhost = \"127.0.0.1\"\n",
            self.exports.display().to_string(),
            self.pidfile.display().to_string()
        )
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Poll `f` until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Run `cmd` with its output captured (both pipes drained on threads, so a chatty program
/// cannot block on a full pipe). Past `limit` it is asked to stop (SIGTERM, so it can
/// clean up) and killed a minute later; the status is then `None`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let pid = child.id();
    let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let asked = Instant::now();
            while asked.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        pid,
    }
}

/// What [`output_within`] saw.
pub struct Finished {
    /// The exit status; `None` when it had to be stopped.
    pub status: Option<std::process::ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Its pid.
    pub pid: u32,
}

/// Run a test-suite script of another language (`clients/*/run-tests`) with the shelfd
/// cargo built (`SHELFD`), and panic with its output unless it passes within `hang`.
pub fn run_suite(script: &str, hang: Duration) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let mut cmd = Command::new(&path);
    cmd.arg("-q")
        .arg("-rxs")
        .env("SHELFD", env!("CARGO_BIN_EXE_shelfd"));
    let f = output_within(cmd, hang);
    let (out, err) = (&f.stdout, &f.stderr);
    match f.status {
        Some(s) if s.success() => println!("{out}"),
        Some(s) => panic!("{script} failed ({s}):\n{out}\n{err}"),
        None => panic!("{script} did not finish within {hang:?}:\n{out}\n{err}"),
    }
}
