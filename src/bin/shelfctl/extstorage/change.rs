//! Changes to an existing volume, and the checks: `grow`, `setinfo`, `snapshot`,
//! `verify`, `open`/`close`.

use shelf::client::Client;
use shelf::proto::{Request, ShareResizeArgs, ShareSetMetadataArgs, SnapshotCreateArgs};

use super::env::share_name;
use super::{loopdev, remote, Run};

impl Run {
    pub(super) fn grow(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let new_size = self.env.new_size.ok_or("VOL_NEW_SIZE is not set")?;
        if let Some(size) = self.env.size {
            if new_size < size {
                return Err(format!(
                    "VOL_NEW_SIZE ({} MiB) is smaller than VOL_SIZE ({} MiB); shelf only grows",
                    new_size >> 20,
                    size >> 20
                ));
            }
        }
        let (id, file) = self.share_id(c)?;
        let a = ShareResizeArgs {
            share: id,
            size: new_size,
            pool: None,
        };
        c.request(&Request::ShareResize(a)).map_err(remote)?;
        loopdev::refresh(&file)?;
        Ok(vec![])
    }

    pub(super) fn setinfo(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let meta = self
            .env
            .metadata
            .as_deref()
            .ok_or("VOL_METADATA is not set")?;
        let (id, _) = self.share_id(c)?;
        let mut metadata = self.ganeti_metadata();
        metadata.insert("ganeti.metadata".into(), meta.into());
        let a = ShareSetMetadataArgs {
            share: id,
            metadata,
            ..Default::default()
        };
        c.request(&Request::ShareSetMetadata(a)).map_err(remote)?;
        Ok(vec![])
    }

    pub(super) fn verify(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let unknown = self.env.unknown_params();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown parameter(s) {}; see parameters.list",
                unknown.join(", ")
            ));
        }
        if let Some(pool) = self.env.param("pool") {
            self.pool_path(c, pool)?;
        }
        if self.env.vol_name.is_some() {
            self.must_resolve(c)?;
        }
        Ok(vec![])
    }

    pub(super) fn snapshot(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let (id, _) = self.share_id(c)?;
        let name = match &self.env.snapshot_name {
            Some(n) => share_name(n),
            None => share_name(&format!("{}.snap", self.env.vol_name()?)),
        };
        let a = SnapshotCreateArgs {
            share: id,
            name,
            pool: None,
        };
        c.request(&Request::SnapshotCreate(a)).map_err(remote)?;
        Ok(vec![])
    }

    /// open and close: shelf has nothing to do (a share is usable while it exists; its
    /// single-attach rule already gives exclusive access), but the volume must exist.
    pub(super) fn open_close(&self, c: &mut Client) -> Result<Vec<String>, String> {
        self.must_resolve(c)?;
        Ok(vec![])
    }
}
