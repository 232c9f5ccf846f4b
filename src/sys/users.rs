//! Users and groups: names to ids, and the groups a peer belongs to. These read the system's
//! user database (NSS), so callers run them off the event loop.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

/// A user given by name or number, as a uid; `None` when no such user exists.
pub fn resolve_user(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

/// A group given by name or number, as a gid; `None` when no such group exists.
pub fn resolve_group(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Every group of the user `uid` whose primary group (as the peer runs now) is `gid`: the
/// primary group plus the supplementary groups the user database lists. A uid without an
/// entry has only its primary group.
pub fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    let mut out = vec![gid];
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    if let Some(u) = user {
        if let Ok(name) = CString::new(u.name) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, Gid::from_raw(gid)) {
                out.extend(list.into_iter().map(Gid::as_raw));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Give the file at `path` to group `gid` (the owner stays).
pub fn chgrp(path: &std::path::Path, gid: u32) -> std::io::Result<()> {
    nix::unistd::chown(path, None, Some(Gid::from_raw(gid))).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_number() {
        assert_eq!(resolve_user("root"), Some(0));
        assert_eq!(resolve_user("0"), Some(0));
        assert_eq!(resolve_group("root"), Some(0));
        assert_eq!(resolve_user("no-such-user-shelf"), None);
        assert!(groups_of(0, 0).contains(&0));
        assert_eq!(groups_of(4_000_000, 77), vec![77]);
    }
}
