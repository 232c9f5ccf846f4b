//! A private tgtd: iSCSI portal on 127.0.0.1:<port>, management on control port
//! `-C <control>` (never the machine's own tgtd); killed on drop.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{kill_child, Res, SharedChild};

/// A private tgtd.
#[derive(Debug)]
pub struct Tgtd {
    /// iSCSI portal port on 127.0.0.1.
    pub port: u16,
    /// tgtadm control port.
    pub control: u32,
    /// I/O threads per LUN (`-t`); `None` for tgtd's default.
    threads: Option<u32>,
    /// Whether tgtd runs in a process group of its own (so a terminal's ^C reaches only
    /// the caller, which then tears down in order).
    own_group: bool,
    child: SharedChild,
}

impl Tgtd {
    /// Start tgtd on these ports and wait until tgtadm reaches it.
    pub fn launch(port: u16, control: u32, threads: Option<u32>, own_group: bool) -> Res<Tgtd> {
        let t = Tgtd {
            port,
            control,
            threads,
            own_group,
            child: Arc::new(Mutex::new(None)),
        };
        t.spawn()?;
        Ok(t)
    }

    fn spawn(&self) -> Res<()> {
        let mut cmd = Command::new("tgtd");
        cmd.arg("-f");
        if let Some(n) = self.threads {
            cmd.args(["-t", &n.to_string()]);
        }
        cmd.args(["-C", &self.control.to_string(), "--iscsi"])
            .arg(format!("portal=127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.own_group {
            cmd.process_group(0);
        }
        let child = cmd
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

    /// Kill tgtd (it forgets every target).
    pub fn halt(&self) {
        kill_child(&self.child);
    }

    /// Kill tgtd (it forgets every target) and start a fresh one on the same ports.
    pub fn respawn(&self) -> Res<()> {
        self.halt();
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

    /// Run tgtadm against this tgtd: its stdout, or its stderr as the error.
    pub fn tgtadm(&self, args: &[&str]) -> Result<String, String> {
        let argv = self.argv();
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Send a signal to tgtd (SIGSTOP makes every tgtadm hang until SIGCONT; a kill still
    /// ends a stopped tgtd).
    pub fn send(&self, sig: nix::sys::signal::Signal) -> Res<()> {
        let pid = match self.child.lock().expect("child lock").as_ref() {
            Some(c) => c.id() as i32,
            None => return Err("tgtd is not running".into()),
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| e.to_string())
    }

    /// How many targets tgtd has whose name contains `prefix`.
    pub fn count_targets(&self, prefix: &str) -> Res<usize> {
        let out = self.tgtadm(&["--op", "show", "--mode", "target"])?;
        Ok(out
            .lines()
            .filter(|l| l.starts_with("Target ") && l.contains(prefix))
            .count())
    }

    /// Config lines pointing shelfd at this tgtd, its targets named under `iqn_prefix`.
    pub fn config_with_prefix(&self, iqn_prefix: &str) -> String {
        format!(
            "[iscsi]\nportal = \"127.0.0.1:{}\"\ntgt_control_port = {}\niqn_prefix = {iqn_prefix:?}\n",
            self.port, self.control
        )
    }

    /// The undo (kill tgtd), for a caller that must be able to run it from elsewhere.
    pub fn teardown(&self) -> impl FnOnce() + Send + 'static {
        let c = self.child.clone();
        move || kill_child(&c)
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        self.halt();
    }
}
