//! What a Ganeti volume name is in shelf: a share, a snapshot, or nothing.

use std::path::PathBuf;

use ciborium::Value;
use shelf::client::{get_text, Client};
use shelf::proto::{PoolRef, Request, ShareRef, SnapshotListArgs};

use super::env::share_name;
use super::{remote, Run, Target};

impl Run {
    /// The share or snapshot this volume is; `None` when there is neither.
    pub(super) fn resolve(&self, c: &mut Client) -> Result<Option<Target>, String> {
        let name = self.name()?;
        let a = ShareRef {
            share: name.clone(),
            pool: self.pool_arg(),
        };
        match c.request(&Request::ShareShow(a)) {
            Ok(share) => {
                if get_text(&share, "layout") == Some("filesystem") {
                    return Err(format!(
                        "share {name} is a formatted (filesystem) share mounted by shelfd; Ganeti needs a block share"
                    ));
                }
                let id = get_text(&share, "id").ok_or("share.show gave no id")?;
                // The pool knows where its volume is (a file, or an LV's device).
                let device = get_text(&share, "device")
                    .ok_or_else(|| format!("share {name} is in a pool shelfd does not run"))?;
                Ok(Some(Target::Share {
                    id: id.to_string(),
                    file: PathBuf::from(device),
                }))
            }
            Err(e) if e.code() == Some("not_found") => self.resolve_snapshot(c, &name),
            Err(e) => Err(remote(e)),
        }
    }

    pub(super) fn resolve_snapshot(
        &self,
        c: &mut Client,
        name: &str,
    ) -> Result<Option<Target>, String> {
        let list = c
            .request(&Request::SnapshotList(SnapshotListArgs {
                share: None,
                pool: self.pool_arg(),
            }))
            .map_err(remote)?;
        let found: Vec<&Value> = list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| get_text(s, "name") == Some(name))
                    .collect()
            })
            .unwrap_or_default();
        match found.as_slice() {
            [] => Ok(None),
            [s] => {
                let id = get_text(s, "id").ok_or("snapshot.list gave no id")?;
                let pool = get_text(s, "pool").ok_or("snapshot.list gave no pool")?;
                let dir = self.pool_path(c, pool)?;
                Ok(Some(Target::Snapshot {
                    id: id.to_string(),
                    file: dir.join("snapshots").join(id),
                }))
            }
            _ => Err(format!(
                "{} snapshots are named {name}; set EXTP_POOL or rename them",
                found.len()
            )),
        }
    }

    /// The directory of a file pool (snapshots are files in it); other kinds of pool keep
    /// snapshots as inactive LVs, which this provider does not attach.
    pub(super) fn pool_path(&self, c: &mut Client, pool: &str) -> Result<PathBuf, String> {
        let p = c
            .request(&Request::PoolShow(PoolRef { name: pool.into() }))
            .map_err(remote)?;
        if get_text(&p, "kind") != Some("file") {
            return Err(format!(
                "pool {pool} is not a file pool; attaching its snapshots is not supported"
            ));
        }
        get_text(&p, "path")
            .map(PathBuf::from)
            .ok_or_else(|| format!("pool {pool} has no path"))
    }

    pub(super) fn must_resolve(&self, c: &mut Client) -> Result<Target, String> {
        self.resolve(c)?.ok_or_else(|| {
            format!(
                "no share {} in {}",
                share_name(self.env.vol_name.as_deref().unwrap_or("")),
                self.env.param("pool").unwrap_or("shelf")
            )
        })
    }

    pub(super) fn share_id(&self, c: &mut Client) -> Result<(String, PathBuf), String> {
        match self.must_resolve(c)? {
            Target::Share { id, file } => Ok((id, file)),
            Target::Snapshot { .. } => {
                Err("this volume is a snapshot; only shares can be changed".into())
            }
        }
    }
}
