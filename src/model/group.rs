//! Group snapshots: snapshots of several shares taken at one instant
//! (`snapshot.create_group`), listed and deleted together.

use serde::{Deserialize, Serialize};

use super::{ShareState, Snapshot};

/// The most shares one group snapshot may take (bounds the freeze window, the locks held
/// and the request).
pub const MAX_GROUP_SHARES: usize = 64;

/// A group snapshot: its members are ordinary snapshots carrying its id in `group`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotGroup {
    /// UUID, assigned by shelfd.
    pub id: String,
    /// Name, unique within its pool.
    pub name: String,
    /// The pool of every member.
    pub pool: String,
    /// Life-cycle state (`creating`, `available`, `deleting`).
    pub state: ShareState,
    /// Unix time of creation, in seconds (every member has the same).
    pub created_at: i64,
    /// The member snapshots, by share name.
    pub snapshots: Vec<Snapshot>,
}

/// Check the share references of a group: one at least, at most [`MAX_GROUP_SHARES`],
/// none twice (compared after resolving, so a share named once by id and once by name
/// counts twice). Returns what is wrong, for `invalid_argument`.
pub fn check_group_members(ids: &[String]) -> Result<(), String> {
    if ids.is_empty() {
        return Err("a group snapshot needs at least one share".into());
    }
    if ids.len() > MAX_GROUP_SHARES {
        return Err(format!(
            "a group snapshot takes at most {MAX_GROUP_SHARES} shares ({} given)",
            ids.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        if !seen.insert(id.as_str()) {
            return Err(format!("share {id} is named twice in the group"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_bounded_and_unique() {
        let ids = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        assert!(check_group_members(&ids(1)).is_ok());
        assert!(check_group_members(&ids(MAX_GROUP_SHARES)).is_ok());
        assert!(check_group_members(&ids(MAX_GROUP_SHARES + 1)).is_err());
        assert!(check_group_members(&[]).is_err());
        let twice = vec!["a".to_string(), "b".into(), "a".into()];
        assert!(check_group_members(&twice).unwrap_err().contains("twice"));
    }
}
