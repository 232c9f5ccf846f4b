//! Test harness for the integration tests: the real thing, private to one test.
//!
//! * [`rig`] — the world shelfd runs in: a scratch XFS on a loop device, a private tgtd
//!   on 127.0.0.1, a private exports file, and shelfd itself; each piece undoes itself in
//!   `Drop`. The same files are shelf-bench's rig: the bench includes them with
//!   `#[path = "../../../tests/common/rig/mod.rs"] mod rig;`, so the library (and the
//!   shipped daemon's API) carries no test rig and needs no feature for one. The rig
//!   returns errors; this harness turns them into panics.
//! * [`world`] — the tests' side of the rig: `Xfs::new`, `Tgtd::start`,
//!   `ExportsFile::new`, scratch directories, and [`Rig`], the usual set (shelfd on a
//!   scratch XFS with a private tgtd and exports file) in the order they must go.
//! * [`daemon`] — [`Daemon`] (the rig's shelfd with the calls tests make) and [`Layout`],
//!   a config that never points at the machine's own exports, ganesha or tgtd; losing the
//!   database and `recover --rebuild-db`.
//! * [`agree`] — the one agreement checker: the database's rows, tgtd, the exports file
//!   and the kernel's export table say the same, and attached initiators log in.
//! * [`iscsi`] — the one iSCSI login helper (libiscsi's tools with CHAP from
//!   connection_info).
//! * [`values`] and [`proc`] — CBOR values and files; running programs.
//! * [`ganesha`] — a private nfs-ganesha.
//! * [`csi`] — the CSI plugin tests' harness: appliances, the real shelf-csi, gRPC clients.
//! * [`csi_node`] — the CSI Node tests' scratch paths, mountinfo lookups and requests.
#![allow(dead_code, unused_imports)]

pub mod agree;
pub mod csi;
pub mod csi_node;
pub mod daemon;
pub mod ganesha;
pub mod iscsi;
pub mod proc;
pub mod rig;
pub mod values;
pub mod world;

pub use agree::connector;
pub use daemon::{Daemon, Layout};
pub use ganesha::Ganesha;
pub use iscsi::Login;
pub use proc::{
    all_traced_by, eventually, exportfs_v, output_within, run_suite, sh, try_run, try_run_env,
    wait_until_traced, Finished,
};
pub use rig::{ExportsFile, Tgtd, Xfs};
pub use values::{
    begin_receive, create_formatted, create_share, field, n, open_send, pattern, read_at, sub, t,
    volume, wait_job, write_at,
};
pub use world::{
    free_control_port, free_port, loop_mounted, scratch, unmount_patiently, MountsUnder, Rig,
};
