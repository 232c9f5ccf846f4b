//! The volume's life: `create`, `attach`, `detach`, `remove`.

use shelf::client::Client;
use shelf::proto::{Request, ShareCreateArgs, ShareDeleteArgs, SnapshotRef};

use super::{loopdev, remote, Run, Target};

use super::iscsi::iscsi_attach_args;

impl Run {
    pub(super) fn create(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let size = self.env.size.ok_or("VOL_SIZE is not set")?;
        let a = ShareCreateArgs {
            name: self.name()?,
            size,
            pool: self.pool_arg(),
            metadata: self.ganeti_metadata(),
            ..Default::default()
        };
        c.request(&Request::ShareCreate(a)).map_err(remote)?;
        Ok(vec![])
    }

    pub(super) fn attach(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let target = self.must_resolve(c)?;
        let read_only = matches!(target, Target::Snapshot { .. });
        let dev = loopdev::attach(target.file(), read_only)?;
        let mut out = vec![dev];
        if let Target::Share { id, .. } = &target {
            match self.iscsi_uri(c, id) {
                Ok(Some(uri)) => out.push(format!("kvm:{uri}")),
                Ok(None) => {}
                Err(m) if !self.env.userspace()? => {
                    eprintln!("shelf extstorage attach: no userspace URI: {m}")
                }
                Err(m) => return Err(m),
            }
        }
        Ok(out)
    }

    pub(super) fn detach(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let Some(target) = self.resolve(c)? else {
            return Ok(vec![]);
        };
        loopdev::detach(target.file())?;
        if let (Target::Share { id, .. }, Some(initiator)) = (&target, self.env.param("initiator"))
        {
            if self.iscsi_export(c, id)? {
                let a = iscsi_attach_args(id, initiator);
                c.request(&Request::ShareDetach(a)).map_err(remote)?;
            }
        }
        Ok(vec![])
    }

    pub(super) fn remove(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let Some(target) = self.resolve(c)? else {
            return Ok(vec![]);
        };
        loopdev::detach(target.file())?;
        let r = match &target {
            Target::Share { id, .. } => Request::ShareDelete(ShareDeleteArgs {
                share: id.clone(),
                pool: None,
                recursive: true,
                force: true,
            }),
            Target::Snapshot { id, .. } => Request::SnapshotDelete(SnapshotRef {
                snapshot: id.clone(),
                ..Default::default()
            }),
        };
        match c.request(&r) {
            Err(e) if e.code() != Some("not_found") => Err(remote(e)),
            _ => Ok(vec![]),
        }
    }
}
