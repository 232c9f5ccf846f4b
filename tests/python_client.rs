//! The Python client's test suite (`clients/python/`), run as part of `cargo test`.
//!
//! `clients/python/run-tests` makes a virtual environment, installs `shelf_client` with
//! its test extra, and runs pytest against real shelfd processes. It is given the binary
//! cargo built for this test run (`SHELFD`), so the Python suite always tests the same
//! daemon as the Rust suite. Its daemons live in their own scratch directories and point
//! every export driver at private, absent paths and ports.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than the Python suite ever needs (a few seconds, plus a first-time `pip
/// install`); past this the run is a hang and is killed.
const HANG: Duration = Duration::from_secs(900);

#[test]
fn python_client_suite_passes_against_this_shelfd() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/run-tests");
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
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => println!("{out}"),
        Some(s) => panic!("clients/python/run-tests failed ({s}):\n{out}\n{err}"),
        None => panic!("clients/python/run-tests did not finish within {HANG:?}:\n{out}\n{err}"),
    }
}
