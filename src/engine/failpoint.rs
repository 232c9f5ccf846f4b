//! Crash injection for tests: `SHELF_FAILPOINT=<name>` makes a debug build of shelfd abort
//! (no cleanup, no unwinding) when it reaches the named step. Release builds compile the
//! check away.

/// Abort the process here if `SHELF_FAILPOINT` names this step (debug builds only).
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    {
        if std::env::var("SHELF_FAILPOINT").is_ok_and(|v| v == name) {
            eprintln!("shelfd: failpoint {name} reached; aborting");
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Every failpoint shelfd has, so a test can walk them all.
pub const ALL: &[&str] = &[
    "share.create.before_volume",
    "share.create.after_volume",
    "share.delete.after_mark",
    "share.delete.after_volume",
    "share.resize.after_intent",
    "share.resize.after_grow",
    "share.clone.before_volume",
    "share.clone.after_volume",
    "snapshot.create.before_copy",
    "snapshot.create.after_copy",
    "snapshot.delete.after_mark",
    "snapshot.delete.after_file",
];
