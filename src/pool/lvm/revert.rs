//! `share.revert` on an LVM thin pool: a writable thin snapshot of the snapshot's LV is
//! staged as `shelf-<id>-revert` (activated, grown to the share's size, tagged with the
//! share's identity, its exports record and `revert` = the revert's tag); the swap renames
//! the share's LV to `shelf-<id>-revert-old`, then the staged LV to `shelf-<id>`; once the
//! exports hold the new LV, [`Pool::revert_finish`](crate::pool::Pool::revert_finish)
//! removes the old one (an export kept it open until then).
//!
//! Two renames are not one atomic step, so [`LvmPool::revert_state_of`] tells every state
//! apart from the LVs present and their tags:
//!
//! | `shelf-<id>` | `-revert` | `-revert-old` | state |
//! |---|---|---|---|
//! | old content | there | — | `Staged` (discard it) |
//! | — | there | there | `Swapping` (the second rename is due) |
//! | tagged with the revert | — | there or not | `Swapped` (remove the old one) |
//! | — | — | there | `Staged` (the discard renames the old one back) |
//! | old content | — | — | `Untouched` |

use super::report::{self, Lv};
use super::tags;
use super::{share_lv, snapshot_lv, LvmPool};
use crate::error::{Error, Result};
use crate::model::{Share, Snapshot};
use crate::pool::{share_identity, RevertState};

/// The tag key a staged LV carries: the revert's tag (its intent id).
const REVERT_KEY: &str = "revert";
/// The suffix of a staged revert's LV (never a share: see [`super::is_share_lv`]).
pub(super) const STAGED_SUFFIX: &str = "-revert";
/// The suffix of the share's old LV, set aside by the swap.
pub(super) const OLD_SUFFIX: &str = "-revert-old";

/// The staged LV of share `id`'s revert.
pub(super) fn staged_lv(id: &str) -> String {
    format!("{}{STAGED_SUFFIX}", share_lv(id))
}

/// The share's old LV while a revert swaps it out.
pub(super) fn old_lv(id: &str) -> String {
    format!("{}{OLD_SUFFIX}", share_lv(id))
}

/// The share's, the staged and the old LV of a revert, as one listing found them.
struct Found<'a> {
    share: Option<&'a Lv>,
    staged: Option<&'a Lv>,
    old: Option<&'a Lv>,
}

fn find<'a>(lvs: &'a [Lv], share_id: &str) -> Found<'a> {
    let by = |name: String| lvs.iter().find(|l| l.name == name);
    Found {
        share: by(share_lv(share_id)),
        staged: by(staged_lv(share_id)),
        old: by(old_lv(share_id)),
    }
}

/// Whether `lv` carries `revert` = `tag`.
fn carries_tag(lv: &Lv, tag: &str) -> bool {
    tags::decode(lv.tags.iter().map(String::as_str))
        .is_ok_and(|id| id.get(REVERT_KEY).map(String::as_str) == Some(tag))
}

/// The state of a revert from what a listing found (the table in the module's comment).
fn state_of(found: &Found<'_>, tag: &str) -> RevertState {
    match (found.share, found.staged, found.old) {
        (Some(s), _, _) if carries_tag(s, tag) => RevertState::Swapped,
        (Some(_), Some(_), _) => RevertState::Staged,
        (None, Some(_), Some(_)) => RevertState::Swapping,
        (None, None, Some(_)) => RevertState::Staged,
        _ => RevertState::Untouched,
    }
}

impl LvmPool {
    /// [`crate::pool::Pool::revert_stage`].
    pub(super) fn stage_revert(&self, share: &Share, snap: &Snapshot, tag: &str) -> Result<()> {
        let lvs = self.list()?;
        let found = find(&lvs, &share.id);
        let Some(current) = found.share else {
            return Err(Error::NotFound(format!(
                "pool {}: share {} has no LV {}",
                self.name,
                share.name,
                share_lv(&share.id)
            )));
        };
        let snap_name = snapshot_lv(&snap.id);
        let Some(source) = lvs.iter().find(|l| l.name == snap_name) else {
            return Err(Error::NotFound(format!(
                "pool {}: snapshot {} has no LV {snap_name}",
                self.name, snap.name
            )));
        };
        // The exports record is carried over; the identity is the share's as it is now.
        let mut identity = tags::decode(current.tags.iter().map(String::as_str))
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k == "exports")
            .collect::<std::collections::BTreeMap<_, _>>();
        identity.extend(share_identity(share));
        identity.insert(REVERT_KEY.into(), tag.into());
        let tags = self.encode(&identity)?;
        let staged = staged_lv(&share.id);
        // Leftovers: an earlier attempt's staged LV, an earlier revert's old LV that its
        // last step could not remove (the share's LV is there, so it is not needed).
        for leftover in [found.staged, found.old].into_iter().flatten() {
            self.remove_lv(&leftover.name)?;
        }
        let cmd = report::create_snapshot(self.vg(), &snap_name, &staged, true, &tags);
        self.run(&cmd).map_err(|e| self.undo(e.into(), &staged))?;
        if current.size > source.size {
            // Grown after the snapshot: the share keeps its size (the tail reads zeros).
            self.run(&report::extend(self.vg(), &staged, share.size))
                .map_err(|e| self.undo(e.into(), &staged))?;
        }
        Ok(())
    }

    /// [`crate::pool::Pool::revert_swap`]: the share's LV aside, the staged one in its place;
    /// resumes after the first rename.
    pub(super) fn swap_revert(&self, share: &Share) -> Result<()> {
        let lvs = self.list()?;
        let found = find(&lvs, &share.id);
        let (name, staged, old) = (share_lv(&share.id), staged_lv(&share.id), old_lv(&share.id));
        if found.staged.is_none() {
            return Err(Error::NotFound(format!(
                "pool {}: share {} has no staged revert (LV {staged})",
                self.name, share.name
            )));
        }
        if found.share.is_some() {
            self.run(&report::rename(self.vg(), &name, &old))?;
        }
        self.run(&report::rename(self.vg(), &staged, &name))?;
        Ok(())
    }

    /// [`crate::pool::Pool::revert_finish`].
    pub(super) fn finish_revert(&self, share_id: &str) -> Result<()> {
        self.remove_lv(&old_lv(share_id))
    }

    /// [`crate::pool::Pool::revert_state`].
    pub(super) fn revert_state_of(&self, share_id: &str, tag: &str) -> Result<RevertState> {
        let lvs = self.list()?;
        Ok(state_of(&find(&lvs, share_id), tag))
    }

    /// [`crate::pool::Pool::revert_discard`]: the staged LV goes; an old LV set aside with
    /// no share LV in its place is renamed back.
    pub(super) fn discard_revert(&self, share_id: &str) -> Result<()> {
        let lvs = self.list()?;
        let found = find(&lvs, share_id);
        if let Some(staged) = found.staged {
            self.remove_lv(&staged.name)?;
        }
        if let (None, Some(old)) = (found.share, found.old) {
            self.run(&report::rename(self.vg(), &old.name, &share_lv(share_id)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(name: &str, tags: &[&str]) -> Lv {
        Lv {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Lv::default()
        }
    }

    #[test]
    fn names_carry_fixed_suffixes() {
        assert_eq!(staged_lv("a"), "shelf-a-revert");
        assert_eq!(old_lv("a"), "shelf-a-revert-old");
    }

    /// Every row of the table in the module's comment, from the LVs a listing holds.
    #[test]
    fn tells_every_intermediate_state_apart() {
        let tagged = lv("shelf-a", &["shelf.revert.0.r7", "shelf.kind.0.rshare"]);
        let other_tag = lv("shelf-a", &["shelf.revert.0.r6"]);
        let plain = lv("shelf-a", &["shelf.kind.0.rshare"]);
        let staged = lv("shelf-a-revert", &["shelf.revert.0.r7"]);
        let old = lv("shelf-a-revert-old", &["shelf.kind.0.rshare"]);
        let unrelated = lv("shelf-b-revert", &[]);
        let state = |lvs: Vec<Lv>| state_of(&find(&lvs, "a"), "7");
        use RevertState::*;
        assert_eq!(state(vec![plain.clone(), staged.clone()]), Staged);
        assert_eq!(state(vec![staged.clone(), old.clone()]), Swapping);
        assert_eq!(state(vec![tagged.clone(), old.clone()]), Swapped);
        assert_eq!(state(vec![tagged.clone()]), Swapped);
        assert_eq!(state(vec![old.clone()]), Staged);
        assert_eq!(state(vec![plain.clone(), unrelated]), Untouched);
        // An earlier revert's tag is not this one's.
        assert_eq!(state(vec![other_tag]), Untouched);
    }
}
