//! `shelfctl group-snapshot create|list|show|delete`: group snapshots (one snapshot of
//! each of several shares of one pool at one instant; docs/protocol.md §8.33).

use clap::Subcommand;
use shelf::proto::{GroupSnapshotRef, PoolFilter, Request, SnapshotCreateGroupArgs};

use crate::output::Kind;

/// The group-snapshot commands.
#[derive(Debug, Subcommand)]
pub enum GroupSnapshotCmd {
    /// Snapshot several shares of one pool at one instant (all or nothing); every member
    /// snapshot is named NAME.
    Create {
        /// The group's name (unique in its pool).
        name: String,
        /// The shares: ids or names, each once.
        #[arg(required = true)]
        shares: Vec<String>,
        /// Pool, when a share's name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
    /// List group snapshots (printed as JSON: each with its members).
    List {
        /// Only this pool's.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Show a group snapshot with its members (printed as JSON).
    Show {
        /// Id or name.
        group: String,
        /// Pool, when the name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Delete a group snapshot and every member (a member alone cannot be deleted).
    Delete {
        /// Id or name.
        group: String,
        /// Pool, when the name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
}

/// The typed request of a group-snapshot command, and how its answer is printed.
pub fn request(c: GroupSnapshotCmd) -> (Request, Kind) {
    match c {
        GroupSnapshotCmd::Create { name, shares, pool } => (
            Request::SnapshotCreateGroup(SnapshotCreateGroupArgs { shares, name, pool }),
            Kind::Raw,
        ),
        GroupSnapshotCmd::List { pool } => {
            (Request::GroupSnapshotList(PoolFilter { pool }), Kind::Raw)
        }
        GroupSnapshotCmd::Show { group, pool } => (
            Request::GroupSnapshotShow(GroupSnapshotRef { group, pool }),
            Kind::Raw,
        ),
        GroupSnapshotCmd::Delete { group, pool } => (
            Request::GroupSnapshotDelete(GroupSnapshotRef { group, pool }),
            Kind::Deleted,
        ),
    }
}
