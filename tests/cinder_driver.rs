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

mod common;

use std::time::Duration;

/// Longer than the suite ever needs (with a first-time `pip install`); past this the run is
/// a hang and is stopped.
const HANG: Duration = Duration::from_secs(1800);

#[test]
fn cinder_driver_suite_passes_against_this_shelfd() {
    common::run_suite("clients/cinder/run-tests", HANG);
}
