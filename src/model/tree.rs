//! Pools, shares and snapshots, and the rules that hold between them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a pool stores its volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// A directory on a filesystem; volumes are sparse files, snapshots are reflinks.
    File,
    /// An LVM thin pool; volumes are thin LVs, snapshots thin snapshots.
    Lvm,
}

impl PoolKind {
    /// The wire name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::File => "file",
            PoolKind::Lvm => "lvm",
        }
    }
}

/// `pool.show`'s `discard`: does an attach of a thin volume over each block protocol
/// answer `discard: true` (docs/protocol.md 8.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDiscard {
    /// Over iSCSI.
    pub iscsi: bool,
    /// Over NVMe/TCP.
    pub nvme: bool,
}

/// A pool with its live figures, as `pool.show` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// The pool's name from the config.
    pub name: String,
    /// Its kind.
    pub kind: PoolKind,
    /// The directory the pool lives in.
    pub path: String,
    /// Filesystem size in bytes.
    pub size: u64,
    /// Bytes in use on the filesystem.
    pub used: u64,
    /// Bytes free on the filesystem (available to an unprivileged writer).
    pub free: u64,
    /// Sum of the sizes of the pool's shares.
    pub provisioned: u64,
    /// Bytes the pool's volumes really take (docs/protocol.md, `pool.show`): a file pool's
    /// `st_blocks` × 512 summed over its share volumes and snapshot files (an extent that
    /// reflinks share counts once per file holding it, so this can exceed `used`); an LVM
    /// pool's thin-pool data in use. From the pool's last pass (a few seconds old). Absent
    /// when that pass failed, and from an older shelfd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<u64>,
    /// Whether a thin volume of this pool attached now is attached with
    /// `connection_info.data.discard: true`, per block protocol: the answer of the
    /// protocol's configured default driver. Absent from an older shelfd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<PoolDiscard>,
    /// Number of shares in the pool.
    pub shares: u64,
    /// Number of snapshots in the pool.
    pub snapshots: u64,
    /// Whether snapshots and clones are instant reflinks (`FICLONE`) or copies.
    pub reflink: bool,
    /// Bytes kept free: new work is refused when `free` is at or below it.
    pub reserved: u64,
    /// `reserved` as a percentage of `size` (from the config).
    pub reserved_percentage: u8,
    /// How many times its usable size the shares may add up to (from the config).
    pub max_over_subscription_ratio: f64,
    /// The most `provisioned` may reach: ratio × (size − reserved).
    pub provisioning_limit: u64,
    /// How many more bytes of shares the pool accepts now.
    pub available_to_provision: u64,
}

/// The life-cycle state of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareState {
    /// Its volume is being made; not usable yet.
    Creating,
    /// Ready.
    Available,
    /// Being removed.
    Deleting,
    /// An operation failed in a way that needs an operator; the message is in the log.
    Error,
}

impl ShareState {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareState::Creating => "creating",
            ShareState::Available => "available",
            ShareState::Deleting => "deleting",
            ShareState::Error => "error",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => ShareState::Creating,
            "available" => ShareState::Available,
            "deleting" => ShareState::Deleting,
            "error" => ShareState::Error,
            _ => return None,
        })
    }
}

/// A share: one volume file (or LV) in a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// UUID, assigned by shelfd.
    pub id: String,
    /// Name, unique within the pool.
    pub name: String,
    /// The pool's name.
    pub pool: String,
    /// Size in bytes.
    pub size: u64,
    /// Thin (`true`) or preallocated.
    pub sparse: bool,
    /// Whether several hosts may attach it at once (single-attach by default).
    pub multiattach: bool,
    /// Life-cycle state.
    pub state: ShareState,
    /// Unix time of creation, in seconds.
    pub created_at: i64,
    /// For a clone: the snapshot it was cloned from (kept after that snapshot is deleted).
    pub origin_snapshot: Option<String>,
    /// For a clone: the share that snapshot belonged to.
    pub origin_share: Option<String>,
    /// Free-form text → text metadata (e.g. the owning instance's name).
    pub metadata: BTreeMap<String, String>,
    /// `block`: a raw volume (exported over iSCSI, or its directory over NFS);
    /// `filesystem`: a formatted volume, mounted by shelfd, its mount exported over NFS.
    #[serde(default)]
    pub layout: Layout,
    /// The filesystem of a `filesystem` share.
    #[serde(default)]
    pub filesystem: Option<FsKind>,
}

/// How a share's volume is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// A raw volume.
    #[default]
    Block,
    /// A formatted volume that shelfd mounts.
    Filesystem,
}

impl Layout {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Block => "block",
            Layout::Filesystem => "filesystem",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "block" => Some(Layout::Block),
            "filesystem" => Some(Layout::Filesystem),
            _ => None,
        }
    }
}

/// The filesystem a `filesystem` share is formatted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// XFS (with reflink).
    Xfs,
    /// ext4.
    Ext4,
}

impl FsKind {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Xfs => "xfs",
            FsKind::Ext4 => "ext4",
        }
    }

    /// The smallest volume it can be made on (mkfs.xfs refuses less than 300 MiB).
    pub fn min_size(self) -> u64 {
        match self {
            FsKind::Xfs => 300 << 20,
            FsKind::Ext4 => 16 << 20,
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xfs" => Some(FsKind::Xfs),
            "ext4" => Some(FsKind::Ext4),
            _ => None,
        }
    }
}

/// A point-in-time copy of a share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// UUID, assigned by shelfd.
    pub id: String,
    /// Name, unique within its share.
    pub name: String,
    /// The id of the share it was taken from.
    pub share: String,
    /// The share's name (for display).
    pub share_name: String,
    /// The pool.
    pub pool: String,
    /// The share's size when the snapshot was taken.
    pub size: u64,
    /// Life-cycle state (`creating`, `available`, `deleting`).
    pub state: ShareState,
    /// Unix time of creation, in seconds.
    pub created_at: i64,
    /// The id of the group snapshot it was taken in (`snapshot.create_group`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// One share in the lineage tree, with its snapshots and, under each, the clones made from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    /// The share's id.
    pub id: String,
    /// The share's name.
    pub name: String,
    /// The pool.
    pub pool: String,
    /// Size in bytes.
    pub size: u64,
    /// Life-cycle state.
    pub state: ShareState,
    /// Its snapshots, oldest first.
    pub snapshots: Vec<TreeSnapshot>,
}

/// A snapshot in the lineage tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeSnapshot {
    /// The snapshot's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Size at snapshot time.
    pub size: u64,
    /// Shares cloned from it.
    pub clones: Vec<TreeNode>,
}

/// Why a share cannot be deleted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteBlocked {
    /// It is in the middle of being created.
    Busy(String),
    /// It has snapshots and `recursive` was not given.
    HasDependents(String),
}

/// May this share be deleted? Snapshots block a delete unless `recursive` is given; a share
/// still being created cannot be deleted. A share in `deleting` state may be deleted again
/// (a retry after a failed delete), as may one in `error`.
pub fn can_delete_share(
    share: &Share,
    snapshot_names: &[&str],
    recursive: bool,
) -> Result<(), DeleteBlocked> {
    if share.state == ShareState::Creating {
        return Err(DeleteBlocked::Busy(format!(
            "share {} is still being created",
            share.name
        )));
    }
    if !snapshot_names.is_empty() && !recursive {
        let shown: Vec<&str> = snapshot_names.iter().copied().take(5).collect();
        return Err(DeleteBlocked::HasDependents(format!(
            "share {} has {} snapshot(s) ({}{}); delete them first or pass recursive: true",
            share.name,
            snapshot_names.len(),
            shown.join(", "),
            if snapshot_names.len() > 5 {
                ", ..."
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// Generations of clones nested in one `tree` reply; deeper clones are left out of the
/// nesting (their `origin_snapshot` still names their origin in `share.show`).
pub const MAX_TREE_DEPTH: usize = 200;

/// Build the lineage forest: roots are shares that are not clones (or whose origin snapshot
/// is gone), each with its snapshots and the clones made from them, nested at most
/// [`MAX_TREE_DEPTH`] generations deep. Takes the rows as they are held (`Share` or
/// `Arc<Share>`, as the store's index holds them).
pub fn build_tree<S, N>(shares: &[S], snapshots: &[N]) -> Vec<TreeNode>
where
    S: std::borrow::Borrow<Share>,
    N: std::borrow::Borrow<Snapshot>,
{
    let mut snaps_by_share: BTreeMap<&str, Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots.iter().map(|s| s.borrow()) {
        snaps_by_share.entry(s.share.as_str()).or_default().push(s);
    }
    let mut clones_by_snap: BTreeMap<&str, Vec<&Share>> = BTreeMap::new();
    let snap_ids: std::collections::HashSet<&str> =
        snapshots.iter().map(|s| s.borrow().id.as_str()).collect();
    let mut roots = Vec::new();
    for sh in shares.iter().map(|s| s.borrow()) {
        match sh.origin_snapshot.as_deref() {
            Some(o) if snap_ids.contains(o) => clones_by_snap.entry(o).or_default().push(sh),
            _ => roots.push(sh),
        }
    }
    fn node(
        sh: &Share,
        snaps: &BTreeMap<&str, Vec<&Snapshot>>,
        clones: &BTreeMap<&str, Vec<&Share>>,
        depth: usize,
    ) -> TreeNode {
        let snapshots = snaps
            .get(sh.id.as_str())
            .map(|v| {
                v.iter()
                    .map(|s| TreeSnapshot {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        size: s.size,
                        clones: if depth >= MAX_TREE_DEPTH {
                            Vec::new()
                        } else {
                            clones
                                .get(s.id.as_str())
                                .map(|cs| {
                                    cs.iter()
                                        .map(|c| node(c, snaps, clones, depth + 1))
                                        .collect()
                                })
                                .unwrap_or_default()
                        },
                    })
                    .collect()
            })
            .unwrap_or_default();
        TreeNode {
            id: sh.id.clone(),
            name: sh.name.clone(),
            pool: sh.pool.clone(),
            size: sh.size,
            state: sh.state,
            snapshots,
        }
    }
    roots
        .iter()
        .map(|r| node(r, &snaps_by_share, &clones_by_snap, 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(id: &str, origin: Option<&str>) -> Share {
        Share {
            id: id.into(),
            name: format!("n-{id}"),
            pool: "default".into(),
            size: 1 << 20,
            sparse: true,
            multiattach: false,
            state: ShareState::Available,
            created_at: 0,
            origin_snapshot: origin.map(Into::into),
            origin_share: None,
            metadata: BTreeMap::new(),
            layout: Layout::Block,
            filesystem: None,
        }
    }

    fn snap(id: &str, share: &str) -> Snapshot {
        Snapshot {
            id: id.into(),
            name: format!("s-{id}"),
            share: share.into(),
            share_name: String::new(),
            pool: "default".into(),
            size: 1 << 20,
            state: ShareState::Available,
            created_at: 0,
            group: None,
        }
    }

    #[test]
    fn snapshots_block_delete_unless_recursive() {
        let s = share("a", None);
        assert!(matches!(
            can_delete_share(&s, &["x", "y"], false),
            Err(DeleteBlocked::HasDependents(_))
        ));
        assert!(can_delete_share(&s, &["x", "y"], true).is_ok());
        assert!(can_delete_share(&s, &[], false).is_ok());
    }

    #[test]
    fn busy_states_block_delete() {
        let mut s = share("a", None);
        s.state = ShareState::Creating;
        assert!(matches!(
            can_delete_share(&s, &[], true),
            Err(DeleteBlocked::Busy(_))
        ));
        for st in [
            ShareState::Error,
            ShareState::Deleting,
            ShareState::Available,
        ] {
            s.state = st;
            assert!(can_delete_share(&s, &[], false).is_ok());
        }
    }

    #[test]
    fn tree_nests_clones_under_snapshots() {
        let shares = vec![
            share("a", None),
            share("b", Some("s1")),
            share("c", Some("gone")),
        ];
        let snaps = vec![snap("s1", "a")];
        let t = build_tree(&shares, &snaps);
        assert_eq!(t.len(), 2, "a and the orphaned clone c are roots");
        assert_eq!(t[0].snapshots[0].clones[0].id, "b");
    }

    #[test]
    fn state_names_round_trip() {
        for s in [
            ShareState::Creating,
            ShareState::Available,
            ShareState::Deleting,
            ShareState::Error,
        ] {
            assert_eq!(ShareState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ShareState::parse("bogus"), None);
    }
}
