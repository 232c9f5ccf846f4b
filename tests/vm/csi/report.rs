//! Check lines in guest.sh's format (`PASS name (12345ms)` / `FAIL name: why`, the time
//! counted from guest.sh's start) and the guest's own tools, run to look at what the plugin
//! did: every check compares the plugin's answer with what the kernel and the appliance show.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The checks' printer and failure count.
#[derive(Debug)]
pub struct Report {
    /// guest.sh's start, as nanoseconds since the epoch (`date +%s%N`), when it passed one.
    t0_ns: Option<u128>,
    started: Instant,
    /// How many checks failed.
    pub fails: usize,
}

impl Report {
    /// A report whose times count from `t0_ns` (guest.sh's `$T0`) if given.
    pub fn new(t0_ns: Option<u128>) -> Report {
        Report {
            t0_ns,
            started: Instant::now(),
            fails: 0,
        }
    }

    fn now_ms(&self) -> u128 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        match self.t0_ns {
            Some(t0) => since_epoch.saturating_sub(t0) / 1_000_000,
            None => self.started.elapsed().as_millis(),
        }
    }

    /// A section header, like guest.sh's `--- name (time)`.
    pub fn section(&self, name: &str) {
        println!("--- {name} ({}ms)", self.now_ms());
    }

    /// Print PASS or FAIL for `name`; the result is passed on so a flow can stop at the
    /// first failed step (`r.check(..)?`): what depends on it is then not reported at all,
    /// and the host's list of checks says which did not pass.
    pub fn check<T>(&mut self, name: &str, result: Result<T, String>) -> Result<T, String> {
        match &result {
            Ok(_) => println!("PASS {name} ({}ms)", self.now_ms()),
            Err(why) => {
                self.fails += 1;
                println!("FAIL {name}: {}", why.replace('\n', "\n    "));
            }
        }
        result
    }
}

/// Run `argv` (a guest tool, found by PATH) and return its stdout; an error names the
/// command and carries its status and stderr.
pub fn run(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}: {}{}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// `Ok` when `cond` holds, else `Err(why)`.
pub fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

/// The filesystem type mounted at exactly `path`, if anything is.
pub fn mounted_fs(path: &Path) -> Option<String> {
    let p = path.display().to_string();
    run(&["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", &p])
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The source (device or `host:path`) mounted at exactly `path`.
pub fn mount_source(path: &Path) -> Option<String> {
    let p = path.display().to_string();
    run(&["findmnt", "-n", "-o", "SOURCE", "--mountpoint", &p])
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether `path` is a block device (a device node, or a file with one bind-mounted on it).
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The iSCSI sessions' target IQNs (`iscsiadm -m session`; it exits 21 when there is none).
pub fn iscsi_sessions() -> Vec<String> {
    run(&["iscsiadm", "-m", "session"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

/// The subsystem NQNs the NVMe initiator has controllers of.
pub fn nvme_subsystems() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/nvme-subsystem") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("subsysnqn")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Poll `cond` every 200 ms for up to `secs` seconds (no udev in the guest: device nodes
/// and sysfs entries appear a moment after the RPC that made them).
pub async fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `statvfs(path)`: (total bytes, available bytes).
pub fn fs_size(path: &Path) -> Result<(u64, u64), String> {
    let s =
        nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    let frag = s.fragment_size() as u64;
    Ok((s.blocks() as u64 * frag, s.blocks_available() as u64 * frag))
}

/// The size of a block device (`blockdev --getsize64`).
pub fn device_size(dev: &str) -> Result<u64, String> {
    run(&["blockdev", "--getsize64", dev])?
        .trim()
        .parse()
        .map_err(|e| format!("blockdev --getsize64 {dev}: {e}"))
}
