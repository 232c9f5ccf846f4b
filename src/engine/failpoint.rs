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

/// Every failpoint of the multi-step file-pool operations (`tests/crash.rs` walks them).
pub const ALL: &[&str] = &[
    "share.create.before_volume",
    "share.create.after_volume",
    "share.delete.after_mark",
    "share.delete.after_volume",
    "share.resize.after_intent",
    "share.resize.after_grow",
    "share.set_metadata.after_stamp",
    "share.clone.before_volume",
    "share.clone.after_volume",
    "snapshot.create.before_copy",
    "snapshot.create.after_copy",
    "snapshot.delete.after_mark",
    "snapshot.delete.after_file",
];

/// Every failpoint of `share.revert`, in order (`tests/revert.rs` walks them): the intent
/// is journaled; the new volume is staged; it is swapped in; the intent is forgotten.
pub const REVERT_POINTS: &[&str] = &[
    "share.revert.after_intent",
    "share.revert.after_stage",
    "share.revert.after_swap",
    "share.revert.after_commit",
];

/// Every failpoint of the group snapshot operations (`tests/group_snapshots.rs` walks
/// them): creation's intent is journaled / every member is reflinked; deletion's group is
/// marked / every member file is removed.
pub const GROUP_POINTS: &[&str] = &[
    "snapshot.create_group.after_intent",
    "snapshot.create_group.after_copy",
    "group_snapshot.delete.after_mark",
    "group_snapshot.delete.after_files",
];

/// The three crash points around one driver call of an export or attachment operation:
/// the intent is journaled, then `before` (driver not yet called), `after` (driver done,
/// completion not yet committed), `committed` (completion committed, reply not yet sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverStep {
    /// The intent is in the journal; the driver has not been called.
    pub before: &'static str,
    /// The driver call returned; its completion is not committed.
    pub after: &'static str,
    /// The completion is committed; the reply has not been sent.
    pub committed: &'static str,
}

impl DriverStep {
    const fn new(before: &'static str, after: &'static str, committed: &'static str) -> Self {
        DriverStep {
            before,
            after,
            committed,
        }
    }
}

/// `export.create` (also reached through `share.attach` of a share with no export yet).
pub const EXPORT_CREATE: DriverStep = DriverStep::new(
    "export.create.before_apply",
    "export.create.after_apply",
    "export.create.after_commit",
);

/// `export.delete`.
pub const EXPORT_DELETE: DriverStep = DriverStep::new(
    "export.delete.before_remove",
    "export.delete.after_remove",
    "export.delete.after_commit",
);

/// `share.delete` with `force`, removing each of the share's exports before the share.
pub const SHARE_DELETE_EXPORT: DriverStep = DriverStep::new(
    "share.delete.export.before_remove",
    "share.delete.export.after_remove",
    "share.delete.export.after_commit",
);

/// `share.attach` of a share that is already exported.
pub const SHARE_ATTACH: DriverStep = DriverStep::new(
    "share.attach.before_apply",
    "share.attach.after_apply",
    "share.attach.after_commit",
);

/// `share.detach`.
pub const SHARE_DETACH: DriverStep = DriverStep::new(
    "share.detach.before_apply",
    "share.detach.after_apply",
    "share.detach.after_commit",
);

/// Every failpoint of the export and attachment operations (`tests/crash_exports/` walks
/// them), in the order of [`EXPORT_STEPS`].
pub const EXPORT_POINTS: &[&str] = &[
    EXPORT_CREATE.before,
    EXPORT_CREATE.after,
    EXPORT_CREATE.committed,
    EXPORT_DELETE.before,
    EXPORT_DELETE.after,
    EXPORT_DELETE.committed,
    SHARE_DELETE_EXPORT.before,
    SHARE_DELETE_EXPORT.after,
    SHARE_DELETE_EXPORT.committed,
    SHARE_ATTACH.before,
    SHARE_ATTACH.after,
    SHARE_ATTACH.committed,
    SHARE_DETACH.before,
    SHARE_DETACH.after,
    SHARE_DETACH.committed,
];

/// The export and attachment operations' steps, by operation.
pub const EXPORT_STEPS: &[DriverStep] = &[
    EXPORT_CREATE,
    EXPORT_DELETE,
    SHARE_DELETE_EXPORT,
    SHARE_ATTACH,
    SHARE_DETACH,
];

/// Start-up recovery has settled every interrupted operation; the drivers have not yet
/// been reconciled with the tree (a crash here must not lose a committed export).
pub const RECOVER_DONE: &str = "recover.done";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_points_list_every_step_once() {
        let from_steps: Vec<&str> = EXPORT_STEPS
            .iter()
            .flat_map(|s| [s.before, s.after, s.committed])
            .collect();
        assert_eq!(from_steps, EXPORT_POINTS);
        let mut unique = EXPORT_POINTS.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), EXPORT_POINTS.len());
    }
}
