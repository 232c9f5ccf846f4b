//! The shelf objects the controller reads, as typed values: which appliance an id names,
//! and `share.show` / `snapshot.show` / lists decoded into shelf's own model types, with
//! "not there" kept apart from a failure so each RPC can decide what absence means
//! (DeleteSnapshot: success; CreateSnapshot: NOT_FOUND).

use std::collections::BTreeMap;

use ciborium::Value;
use serde::de::DeserializeOwned;
use shelf::model::{Share, Snapshot};
use shelf::proto::{Request, ShareListArgs, ShareRef, SnapshotListArgs, SnapshotRef};
use tonic::{Code, Status};

use crate::appliance::Appliance;
use crate::config::Config;
use crate::ids::Id;

/// Share metadata key holding the CSI volume name: a share carries it only when this plugin
/// made it, and only such shares (and their snapshots) are the plugin's.
pub const META_NAME: &str = "csi.name";
/// Share metadata key holding the volume's protocol (`iscsi`, `nfs`, `nvme`).
pub const META_PROTOCOL: &str = "csi.protocol";

/// The appliance named `name` in the config, or `None` when none is configured under it
/// (an id naming it is then of no volume this plugin can reach).
pub fn appliance(cfg: &Config, name: &str) -> Option<Appliance> {
    cfg.appliance(name).map(Appliance::new)
}

/// Every configured appliance, in config order.
pub fn appliances(cfg: &Config) -> Vec<Appliance> {
    cfg.appliances.iter().map(Appliance::new).collect()
}

/// Decode a shelfd result into `T`; a result of another shape breaks the protocol.
pub fn decode<T: DeserializeOwned>(appliance: &Appliance, v: Value) -> Result<T, Status> {
    v.deserialized().map_err(|e| {
        Status::internal(format!(
            "appliance {}: unexpected reply shape: {e}",
            appliance.name
        ))
    })
}

/// `Ok(None)` for a NOT_FOUND answer, the value otherwise.
pub fn found<T>(r: Result<T, Status>) -> Result<Option<T>, Status> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// The share with shelf id `id` on `appliance`, if there is one.
pub async fn share(appliance: &Appliance, id: &str) -> Result<Option<Share>, Status> {
    let req = Request::ShareShow(ShareRef {
        share: id.to_string(),
        pool: None,
    });
    let Some(v) = found(appliance.call(req).await)? else {
        return Ok(None);
    };
    let share: Share = decode(appliance, v)?;
    // A reference is an id or a name: only an id match is the object the CO named.
    Ok((share.id == id).then_some(share))
}

/// The share an id names, if the appliance is configured and the share is one this
/// plugin made ([`META_NAME`]). `None` for a share of someone else: it is no CSI volume.
pub async fn csi_share(cfg: &Config, id: &Id) -> Result<Option<(Appliance, Share)>, Status> {
    let Some(a) = appliance(cfg, &id.appliance) else {
        return Ok(None);
    };
    Ok(share(&a, &id.object).await?.filter(is_csi).map(|s| (a, s)))
}

/// Whether this plugin made `share`.
pub fn is_csi(share: &Share) -> bool {
    share.metadata.contains_key(META_NAME)
}

/// The snapshot with shelf id `id` on `appliance`, if there is one.
pub async fn snapshot(appliance: &Appliance, id: &str) -> Result<Option<Snapshot>, Status> {
    let req = Request::SnapshotShow(SnapshotRef {
        snapshot: id.to_string(),
        share: None,
        pool: None,
    });
    match found(appliance.call(req).await)? {
        Some(v) => decode(appliance, v).map(Some),
        None => Ok(None),
    }
}

/// The snapshots on `appliance`, of one share when `share` is given, oldest first.
pub async fn snapshots(
    appliance: &Appliance,
    share: Option<&str>,
) -> Result<Vec<Snapshot>, Status> {
    let req = Request::SnapshotList(SnapshotListArgs {
        share: share.map(str::to_string),
        pool: None,
    });
    decode(appliance, appliance.call(req).await?)
}

/// The shares this plugin made on `appliance`, by shelf id.
pub async fn csi_shares(appliance: &Appliance) -> Result<BTreeMap<String, Share>, Status> {
    let req = Request::ShareList(ShareListArgs::default());
    let all: Vec<Share> = decode(appliance, appliance.call(req).await?)?;
    Ok(all
        .into_iter()
        .filter(is_csi)
        .map(|s| (s.id.clone(), s))
        .collect())
}
