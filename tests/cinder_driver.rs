//! The OpenStack Cinder driver's test suite (`clients/cinder/`), run as part of `cargo test`.
//!
//! `clients/cinder/run-tests` makes a virtual environment with `shelf_client` (from
//! `clients/python`), the driver `shelf_cinder`, pytest and the real `cinder` package, then
//! runs pytest: the driver, a subclass of Cinder's own `VolumeDriver`, against a real shelfd
//! on a scratch loop-mounted XFS with a private tgtd on 127.0.0.1, and real iSCSI logins
//! (`iscsi-inq`) with the `connection_info` the driver returns, volumes from images through
//! shelf's image cache (Glance faked), and the driver through an SSH-forwarded socket
//! (a private sshd on 127.0.0.1). It is given the binary cargo
//! built for this run (`SHELFD`), so the driver is tested against the same daemon as the
//! Rust suite. The fixtures stop every process and unmount the scratch filesystem, also when
//! a test fails.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than the suite ever needs (well under a minute, plus a first-time `pip install`
/// of Cinder and its dependencies, a few minutes); past this the run is a hang and is killed.
const HANG: Duration = Duration::from_secs(1800);

/// Ask pytest to stop (its SIGTERM handler unwinds, so the fixtures unmount the scratch
/// XFS and stop shelfd and tgtd), and kill it only if it does not within a minute.
fn stop(child: &mut std::process::Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let asked = Instant::now();
    while asked.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cinder_driver_suite_passes_against_this_shelfd() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/cinder/run-tests");
    let mut child = Command::new(&script)
        .arg("-q")
        .arg("-rxs")
        .env("SHELFD", env!("CARGO_BIN_EXE_shelfd"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    // Drain both pipes on threads so a chatty run cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for run-tests") {
            break Some(status);
        }
        if started.elapsed() > HANG {
            stop(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => println!("{out}"),
        Some(s) => panic!("clients/cinder/run-tests failed ({s}):\n{out}\n{err}"),
        None => panic!("clients/cinder/run-tests did not finish within {HANG:?}:\n{out}\n{err}"),
    }
}
