//! Cinder's own in-process functional stack over real shelf nodes (`clients/cinder/functional/`),
//! run as part of `cargo test`.
//!
//! `clients/cinder/run-functional` runs, in its own pytest process, Cinder's functional test
//! base from the `cinder` package on PyPI (`cinder.tests.functional`): the real REST API on
//! 127.0.0.1, the FilterScheduler with its default filters and weighers, and one volume
//! manager per `enabled_backends` entry, over sqlite and oslo.messaging's in-process
//! transport. Each backend runs the shelf iSCSI driver against its own shelfd (the binary cargo
//! built for this run, `SHELFD`) on a scratch loop-mounted XFS of its own size with a private
//! tgtd: one backend for a volume's life through the API (and a real iSCSI login with the
//! attachment's connection_info), two for placement by the capacity shelf reports, and two
//! for migrating a volume from one to the other by send/receive (`os-migrate_volume`). The
//! classes' cleanups stop every node and unmount its filesystem, also when a test fails.
//! The environment is the one `tests/cinder_driver.rs` makes (`clients/cinder/.venv`).

mod common;

use std::time::Duration;

/// Longer than the suite ever needs (with a first-time `pip install`); past this the run is
/// a hang and is stopped.
const HANG: Duration = Duration::from_secs(1800);

#[test]
fn cinder_functional_stack_passes_against_this_shelfd() {
    common::run_suite("clients/cinder/run-functional", HANG);
}
