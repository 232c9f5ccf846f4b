//! The read-only flag of an iSCSI/NVMe publish: shelf attaches those volumes read-write
//! only, so a `readonly` publish is remembered in the share's metadata (`csi.ro.<host>`),
//! set at publish and removed at unpublish, to answer a publish with the other flag to the
//! same node ALREADY_EXISTS (CSI: "published but incompatible").

use std::collections::BTreeMap;

use shelf::model::Share;
use shelf::proto::{Request, ShareSetMetadataArgs};
use tonic::Status;

use crate::appliance::Appliance;
use crate::objects::found;

/// Share metadata key prefix: `csi.ro.<host>` marks an iSCSI/NVMe volume published
/// read-only to that node (shelf attaches those read-write, so the attachment cannot say).
const META_READ_ONLY: &str = "csi.ro.";

/// ALREADY_EXISTS when an iSCSI/NVMe volume attached to `host` was published there with
/// the other read-only flag (the spec's "published but incompatible").
pub fn check_read_only(share: &Share, host: &str, readonly: bool) -> Result<(), Status> {
    let marked = share
        .metadata
        .contains_key(&format!("{META_READ_ONLY}{host}"));
    if marked != readonly {
        return Err(Status::already_exists(format!(
            "volume is already published to node {host} {}",
            if marked { "read-only" } else { "read-write" }
        )));
    }
    Ok(())
}

/// Set (or with `on: false` remove) the read-only mark of `host` on `share`.
pub async fn mark_read_only(
    appliance: &Appliance,
    share: &Share,
    host: &str,
    on: bool,
) -> Result<(), Status> {
    let key = format!("{META_READ_ONLY}{host}");
    if share.metadata.contains_key(&key) == on {
        return Ok(());
    }
    let (metadata, remove) = if on {
        (BTreeMap::from([(key, "true".to_string())]), vec![])
    } else {
        (BTreeMap::new(), vec![key])
    };
    let set = Request::ShareSetMetadata(ShareSetMetadataArgs {
        share: share.id.clone(),
        pool: None,
        metadata,
        remove,
    });
    found(appliance.call(set).await).map(|_| ())
}
