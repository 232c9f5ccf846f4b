//! Running programs from a test: to success or a panic, to an outcome, within a time
//! limit; and the kernel's export table.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run a command, panicking with its output if it fails.
pub fn sh(argv: &[&str]) -> String {
    super::rig::sh(argv).unwrap_or_else(|e| panic!("{e}"))
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

/// [`try_run`] with `env` added to the child's environment (how a secret reaches a
/// tool without its argv, which any user can read in /proc).
pub fn try_run_env(argv: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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

/// Whether every thread of `pid` is traced by `tracer` (`TracerPid` in its status).
pub fn all_traced_by(pid: i32, tracer: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let traced = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .map(|v| v.trim() == tracer.to_string());
        if traced != Some(true) {
            return false;
        }
        any = true;
    }
    any
}

/// Wait, bounded, until `strace` (started with `-p pid`) traces every thread of `pid`:
/// strace says nothing once attached (`-qq`), so its tracer pid is the only sign. Kills
/// strace and fails the test if it has not attached within 20 s.
pub fn wait_until_traced(strace: &mut std::process::Child, pid: i32) {
    if !eventually(20, || all_traced_by(pid, strace.id())) {
        let _ = strace.kill();
        let _ = strace.wait();
        panic!("strace did not attach to every thread of process {pid} within 20 s");
    }
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
