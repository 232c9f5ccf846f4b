//! Who may do what: peers are `admin`, `reader` or nobody, from their uid and groups.
//!
//! The role is decided per request from the peer's `SO_PEERCRED` identity (read once per
//! connection) and the roles in force, so a reloaded config applies to open connections.

use std::collections::BTreeSet;

use crate::config::AccessConfig;
use crate::proto::Request;
use crate::sys::users::{resolve_group, resolve_user};

/// A peer's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May do everything.
    Admin,
    /// May read: hello, and list/show/tree of pools, shares, snapshots, exports and
    /// attachments (docs/protocol.md §2.1).
    Reader,
    /// May do nothing.
    None,
}

impl Role {
    /// The role's name, as the audit log and errors print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
            Role::None => "none",
        }
    }

    /// Whether this role may run `req`.
    pub fn permits(self, req: &Request) -> bool {
        match self {
            Role::Admin => true,
            Role::Reader => req.is_read_only(),
            Role::None => false,
        }
    }
}

/// The roles, resolved to numeric ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    /// The gid the socket is given, if configured.
    pub socket_gid: Option<u32>,
    admin_uids: BTreeSet<u32>,
    admin_gids: BTreeSet<u32>,
    reader_uids: BTreeSet<u32>,
    reader_gids: BTreeSet<u32>,
}

impl Roles {
    /// Resolve the config's names (this reads the user database: call off the event loop).
    /// Names that do not resolve are left out and reported, so a missing group at boot
    /// narrows access instead of stopping the daemon.
    pub fn resolve(a: &AccessConfig) -> (Roles, Vec<String>) {
        let mut notes = Vec::new();
        let mut ids =
            |key: &str, what: &str, names: &[String], resolve: fn(&str) -> Option<u32>| {
                let mut out = BTreeSet::new();
                for n in names {
                    match resolve(n) {
                        Some(id) => {
                            out.insert(id);
                        }
                        None => notes.push(format!("access.{key}: no {what} {n:?}; ignored")),
                    }
                }
                out
            };
        let admin_uids = ids("admin_users", "user", &a.admin_users, resolve_user);
        let reader_uids = ids("reader_users", "user", &a.reader_users, resolve_user);
        let admin_gids = ids("admin_groups", "group", &a.admin_groups, resolve_group);
        let reader_gids = ids("reader_groups", "group", &a.reader_groups, resolve_group);
        let socket_gid = if a.socket_group.is_empty() {
            None
        } else {
            let g = resolve_group(&a.socket_group);
            if g.is_none() {
                notes.push(format!(
                    "access.socket_group: no group {:?}; the socket keeps shelfd's group",
                    a.socket_group
                ));
            }
            g
        };
        (
            Roles {
                socket_gid,
                admin_uids,
                admin_gids,
                reader_uids,
                reader_gids,
            },
            notes,
        )
    }

    /// Whether a role is given to any group (if not, a peer's groups need not be read).
    pub fn names_groups(&self) -> bool {
        !self.admin_gids.is_empty() || !self.reader_gids.is_empty()
    }

    /// The role of a peer with user `uid` and groups `gids`. root and the daemon's own
    /// user are always admin.
    pub fn role_of(&self, uid: u32, gids: &[u32]) -> Role {
        let me = nix::unistd::geteuid().as_raw();
        if uid == 0 || uid == me || self.admin_uids.contains(&uid) {
            return Role::Admin;
        }
        if gids.iter().any(|g| self.admin_gids.contains(g)) {
            return Role::Admin;
        }
        if self.reader_uids.contains(&uid) || gids.iter().any(|g| self.reader_gids.contains(g)) {
            return Role::Reader;
        }
        Role::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{NoArgs, PoolRef};

    fn access(admins: &[&str], readers: &[&str], reader_groups: &[&str]) -> AccessConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        AccessConfig {
            admin_users: v(admins),
            reader_users: v(readers),
            reader_groups: v(reader_groups),
            ..AccessConfig::default()
        }
    }

    #[test]
    fn roles_follow_users_and_groups() {
        let (r, notes) = Roles::resolve(&access(&["4001"], &["4002"], &["4100", "nosuchgrp"]));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(r.role_of(0, &[0]), Role::Admin);
        assert_eq!(r.role_of(4001, &[9]), Role::Admin);
        assert_eq!(r.role_of(4002, &[9]), Role::Reader);
        assert_eq!(r.role_of(4003, &[9, 4100]), Role::Reader);
        assert_eq!(r.role_of(4003, &[9]), Role::None);
    }

    #[test]
    fn readers_only_read() {
        let _ = NoArgs {};
        let show = Request::PoolShow(PoolRef { name: "p".into() });
        assert!(Role::Reader.permits(&show));
        assert!(Role::Reader.permits(&Request::Hello));
        assert!(!Role::Reader.permits(&Request::Reconcile));
        assert!(!Role::None.permits(&Request::Hello));
        assert!(Role::Admin.permits(&Request::Reconcile));
    }

    #[test]
    fn readers_may_not_touch_images_jobs_events_streams_verify_or_the_audit_log() {
        use crate::proto::{
            AuditListArgs, EventsSubscribeArgs, ImageRef, JobRef, PoolFilter, StreamReadArgs,
            StreamRef, UploadChunkArgs, UploadRef,
        };
        let upload = UploadRef { upload: "u".into() };
        let image = ImageRef {
            image: "i".into(),
            pool: None,
        };
        let job = JobRef { job: "j".into() };
        for req in [
            Request::ImageList(PoolFilter { pool: None }),
            Request::ImageShow(image.clone()),
            Request::ImageDelete(image),
            Request::JobList,
            Request::JobShow(job.clone()),
            Request::JobCancel(job),
            Request::EventsSubscribe(EventsSubscribeArgs::default()),
            Request::AuditList(AuditListArgs::default()),
            Request::Verify,
            Request::UploadChunk(UploadChunkArgs {
                upload: "u".into(),
                offset: 0,
                data: ciborium::Value::Bytes(vec![0; 4]),
            }),
            Request::UploadFinish(upload.clone()),
            Request::UploadAbort(upload),
            Request::SnapshotSend(crate::proto::SnapshotSendArgs::default()),
            Request::ReceiveBegin(crate::proto::ReceiveBeginArgs::default()),
            Request::ReceiveChunk(crate::proto::ReceiveChunkArgs {
                receive: "r".into(),
                offset: 0,
                data: ciborium::Value::Bytes(vec![0; 4]),
            }),
            Request::ReceiveFinish(crate::proto::ReceiveRef::default()),
            Request::ReceiveAbort(crate::proto::ReceiveRef::default()),
            Request::StreamRead(StreamReadArgs {
                stream: "s".into(),
                max: Some(1),
            }),
            Request::StreamClose(StreamRef { stream: "s".into() }),
        ] {
            assert!(!Role::Reader.permits(&req), "{req:?}");
            assert!(Role::Admin.permits(&req), "{req:?}");
        }
    }
}
