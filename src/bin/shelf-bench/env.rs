//! The bench's private world: a scratch XFS on a loop device, private tgtd instances, a
//! private exports file, and its own shelfd. Every piece registers its teardown in one
//! cleanup list, run at the end, on a panic (the guard in `main`) and on SIGINT/SIGTERM
//! (the signal thread), so an interrupted run leaves no mount, process or export behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use shelf::client::Client;

/// A result whose error is a message for the operator.
pub type Res<T> = Result<T, String>;

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

/// Run a command to completion; error with its output if it fails.
pub fn sh(argv: &[&str]) -> Res<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {argv:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{argv:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A scratch directory under /var/tmp with a loop-mounted XFS (reflink) inside.
#[derive(Debug)]
pub struct Scratch {
    /// The scratch directory (image, configs, logs).
    pub dir: PathBuf,
    /// Where the XFS is mounted.
    pub mount: PathBuf,
}

impl Scratch {
    /// Make the directory, a sparse image of `size` bytes, mkfs.xfs and mount it.
    pub fn new(size: u64) -> Res<Scratch> {
        let dir = PathBuf::from(format!("/var/tmp/shelf-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let d = dir.clone();
        on_cleanup("removing the scratch directory", move || {
            let _ = std::fs::remove_dir_all(&d);
        });
        let image = dir.join("xfs.img");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| format!("{}: {e}", image.display()))?;
        sh(&["mkfs.xfs", "-q", "-m", "reflink=1", path_str(&image)])?;
        sh(&["mount", "-o", "loop", path_str(&image), path_str(&mount)])?;
        let m = mount.clone();
        on_cleanup("unmounting the scratch XFS", move || unmount(&m));
        Ok(Scratch { dir, mount })
    }
}

fn unmount(m: &Path) {
    for _ in 0..50 {
        let ok = Command::new("umount")
            .arg(m)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{} still busy after 5 s; unmounting lazily", m.display());
    let _ = Command::new("umount").arg("-l").arg(m).output();
}

/// A path as &str (the bench only makes UTF-8 paths).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// A child process shared between its owner and the cleanup list.
type SharedChild = Arc<Mutex<Option<Child>>>;

fn kill_child(c: &SharedChild) {
    if let Some(mut child) = c.lock().expect("child lock").take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A private tgtd on 127.0.0.1:<port> with control port `-C <control>`.
#[derive(Debug)]
pub struct Tgtd {
    /// iSCSI portal port.
    pub port: u16,
    /// tgtadm control port.
    pub control: u32,
    child: SharedChild,
}

impl Tgtd {
    /// Start tgtd and wait until tgtadm reaches it.
    pub fn start(control: u32) -> Res<Tgtd> {
        let t = Tgtd {
            port: free_port()?,
            control,
            child: Arc::new(Mutex::new(None)),
        };
        let c = t.child.clone();
        on_cleanup("stopping tgtd", move || kill_child(&c));
        t.spawn()?;
        Ok(t)
    }

    fn spawn(&self) -> Res<()> {
        // Four I/O threads per LUN instead of 16: each thread costs tgtd two memory maps,
        // and with 16 the default vm.max_map_count (65530) stops tgtd at ~2,000 LUNs
        // ("tgtadm: out of memory"). See docs/performance.md.
        let child = Command::new("tgtd")
            .args(["-f", "-t", "4", "-C", &self.control.to_string(), "--iscsi"])
            .arg(format!("portal=127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting tgtd (package tgt): {e}"))?;
        *self.child.lock().expect("child lock") = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if self.tgtadm(&["--op", "show", "--mode", "sys"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "tgtd on control port {} did not come up",
            self.control
        ))
    }

    /// Kill tgtd (it forgets every target) and start a fresh one on the same ports.
    pub fn restart(&self) -> Res<()> {
        kill_child(&self.child);
        self.spawn()
    }

    /// The base argv of tgtadm for this tgtd.
    pub fn argv(&self) -> Vec<String> {
        ["tgtadm", "--lld", "iscsi", "-C"]
            .iter()
            .map(|s| s.to_string())
            .chain([self.control.to_string()])
            .collect()
    }

    /// Run tgtadm against this tgtd.
    pub fn tgtadm(&self, a: &[&str]) -> Res<String> {
        let mut argv = self.argv();
        argv.extend(a.iter().map(|s| s.to_string()));
        let v: Vec<&str> = argv.iter().map(String::as_str).collect();
        sh(&v)
    }

    /// How many targets tgtd has whose name starts with `prefix`.
    pub fn count_targets(&self, prefix: &str) -> Res<usize> {
        let out = self.tgtadm(&["--op", "show", "--mode", "target"])?;
        Ok(out
            .lines()
            .filter(|l| l.starts_with("Target ") && l.contains(prefix))
            .count())
    }
}

/// The bench's exports file under /etc/exports.d; removed (and exportfs re-synced) at the end.
#[derive(Debug)]
pub struct ExportsFile {
    /// The file shelfd owns.
    pub path: PathBuf,
}

impl ExportsFile {
    /// A fresh name for this run.
    pub fn new(tag: &str) -> Res<ExportsFile> {
        std::fs::create_dir_all("/etc/exports.d").map_err(|e| e.to_string())?;
        let path = PathBuf::from(format!(
            "/etc/exports.d/shelf-bench-{tag}-{}.exports",
            std::process::id()
        ));
        let p = path.clone();
        on_cleanup("removing an exports file", move || {
            if p.exists() {
                let _ = std::fs::remove_file(&p);
                let _ = Command::new("exportfs").arg("-r").output();
            }
        });
        Ok(ExportsFile { path })
    }
}

/// The bench's shelfd.
#[derive(Debug)]
pub struct Shelfd {
    /// Its socket.
    pub socket: PathBuf,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: SharedChild,
    env: Vec<(String, String)>,
}

impl Shelfd {
    /// Write the config and start shelfd; returns once `hello` answers.
    pub fn start(
        binary: &Path,
        dir: &Path,
        config_text: &str,
        env: Vec<(String, String)>,
    ) -> Res<Shelfd> {
        let config = dir.join("shelf.toml");
        std::fs::write(&config, config_text).map_err(|e| e.to_string())?;
        let d = Shelfd {
            socket: dir.join("run").join("shelf.sock"),
            binary: binary.to_path_buf(),
            config,
            log: dir.join("shelfd.log"),
            child: Arc::new(Mutex::new(None)),
            env,
        };
        let c = d.child.clone();
        on_cleanup("stopping shelfd", move || stop_child(&c));
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&self) -> Res<Duration> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        *self.child.lock().expect("child lock") = Some(child);
        while t0.elapsed() < Duration::from_secs(120) {
            if let Ok(mut c) = Client::connect(&self.socket) {
                if c.request(&shelf::proto::Request::Hello).is_ok() {
                    return Ok(t0.elapsed());
                }
            }
            if let Some(ch) = self.child.lock().expect("child lock").as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    return Err(format!("shelfd exited early ({st}):\n{}", self.log_tail()));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(format!("shelfd did not become ready:\n{}", self.log_tail()))
    }

    /// Stop (SIGTERM) and start again; returns the time from spawn until `hello` answers.
    pub fn restart(&self) -> Res<Duration> {
        stop_child(&self.child);
        self.spawn()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .expect("child lock")
            .as_ref()
            .map(Child::id)
    }

    /// A new connection.
    pub fn client(&self) -> Res<Client> {
        let c = Client::connect(&self.socket).map_err(|e| e.to_string())?;
        c.set_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// The end of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn stop_child(c: &SharedChild) {
    let Some(mut child) = c.lock().expect("child lock").take() else {
        return;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(40) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
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
