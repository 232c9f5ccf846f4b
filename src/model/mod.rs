//! The domain: names, sizes, shares, snapshots and the rules of the tree.
//!
//! Everything here is pure: no I/O, no async, no SQLite. The engine asks these functions
//! whether a request is valid before it touches anything.

mod capacity;
mod export;
mod group;
pub mod image_format;
mod names;
mod node;
mod outcome;
mod size;
mod tree;

pub use capacity::{check_capacity, Capacity, CapacityPolicy, Demand};
pub use export::{
    nfs_connector_client, validate_connector, validate_iqn, validate_nfs_client, validate_nqn,
    validate_single_host, Access, Attached, Attachment, Connector, Driver, Export, ExportOptions,
    Medium, Protocol,
};
pub use group::{check_group_members, SnapshotGroup, MAX_GROUP_SHARES};
pub use names::{
    escape_for_display, is_canonical_uuid, is_display_unsafe, shorten, validate_metadata,
    validate_name, MAX_METADATA_ENTRIES,
};
pub use node::{default_node_name, Node, NodeId, NODE_ID_FILE};
pub use outcome::{EventKind, Object, Outcome};
pub use size::{format_size, parse_size, validate_size, MAX_SIZE, SECTOR};
pub use tree::{
    build_tree, can_delete_share, DeleteBlocked, FsKind, Layout, Pool, PoolDiscard, PoolKind,
    Share, ShareState, Snapshot, TreeNode, TreeSnapshot, MAX_TREE_DEPTH,
};

/// An error in a request's content, found before anything was done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    /// Build an `Invalid` from anything printable.
    pub fn new(msg: impl Into<String>) -> Self {
        Invalid(msg.into())
    }
}
