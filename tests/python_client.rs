//! The Python client's test suite (`clients/python/`), run as part of `cargo test`.
//!
//! `clients/python/run-tests` makes a virtual environment, installs `shelf_client` with
//! its test extra, and runs pytest against real shelfd processes. It is given the binary
//! cargo built for this test run (`SHELFD`), so the Python suite always tests the same
//! daemon as the Rust suite. Its daemons live in their own scratch directories and point
//! every export driver at private, absent paths and ports.

mod common;

use std::time::Duration;

/// Longer than the suite ever needs (with a first-time `pip install`); past this the run is
/// a hang and is stopped.
const HANG: Duration = Duration::from_secs(900);

#[test]
fn python_client_suite_passes_against_this_shelfd() {
    common::run_suite("clients/python/run-tests", HANG);
}
