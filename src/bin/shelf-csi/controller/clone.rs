//! CreateVolume from a content source, on the source's appliance and in its pool (a shelf
//! clone is made in its snapshot's pool).
//!
//! * From a snapshot: `share.clone` of that snapshot, grown (`share.resize`) when the
//!   request asks for more than the snapshot's size.
//! * From a volume: shelf clones only snapshots, so a transient snapshot of the source
//!   (named [`CLONE_SNAPSHOT_PREFIX`] and a hash of the new volume's CSI name, so a retry
//!   finds the same one) is taken, cloned and deleted at once: a shelf clone is independent
//!   of its snapshot and origin. Nothing is left behind, and either volume can be deleted
//!   afterwards. Should the plugin die between the clone and the delete, the transient
//!   snapshot stays until the CO's retry of the CreateVolume ([`forget_transient`]) or a
//!   DeleteVolume of the source (volumes.rs) removes it.

use sha2::{Digest, Sha256};
use shelf::model::{Share, Snapshot};
use shelf::proto::{CloneArgs, Request, ShareResizeArgs, SnapshotCreateArgs, SnapshotRef};
use tonic::Status;

use super::create::{decode_share, Wanted};
use super::params::{self, Protocol};
use super::placement;
use super::ControllerService;
use crate::appliance::Appliance;
use crate::ids::Id;
use crate::objects;

/// Name prefix of the transient snapshots clones of volumes are made from. CSI snapshot
/// names never map to it (snapshots.rs hashes every name starting with `csi.` into
/// `csi.<hex>`, and `clone.` is not hex).
pub const CLONE_SNAPSHOT_PREFIX: &str = "csi.clone.";

/// The transient snapshot's name for the volume called `csi_name`.
pub fn clone_snapshot_name(csi_name: &str) -> String {
    let digest = Sha256::digest(csi_name.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{CLONE_SNAPSHOT_PREFIX}{hex}")
}

/// The volume made from `source` (`(true, id)` a snapshot, `(false, id)` a volume).
pub async fn create_from(
    svc: &ControllerService,
    w: &Wanted,
    (is_snapshot, id): (bool, Id),
) -> Result<(Appliance, Share), Status> {
    let missing = || Status::not_found(format!("content source {id}: no such object"));
    let a = objects::appliance(&svc.cfg, &id.appliance).ok_or_else(missing)?;
    if !placement::allowed(w.req.accessibility_requirements.as_ref(), &a.name) {
        return Err(Status::resource_exhausted(format!(
            "the content source is on appliance {}, which the accessibility requirements \
             exclude (a clone stays on its source's appliance)",
            a.name
        )));
    }
    if is_snapshot {
        let snapshot = objects::snapshot(&a, &id.object)
            .await?
            .ok_or_else(missing)?;
        let origin = objects::share(&a, &snapshot.share).await?;
        let origin = origin.filter(objects::is_csi).ok_or_else(missing)?;
        check_compatible(w, &origin)?;
        return clone_and_grow(&a, w, &snapshot).await.map(|s| (a, s));
    }
    let origin = objects::share(&a, &id.object)
        .await?
        .filter(objects::is_csi)
        .ok_or_else(missing)?;
    check_compatible(w, &origin)?;
    let create = Request::SnapshotCreate(SnapshotCreateArgs {
        share: origin.id.clone(),
        name: clone_snapshot_name(&w.req.name),
        pool: None,
    });
    let v = a.call(create).await?;
    let snapshot: Snapshot = match shelf::client::get(&v, "snapshot") {
        Some(s) => objects::decode(&a, s.clone())?,
        None => return Err(Status::internal("snapshot.create answered no snapshot")),
    };
    let made = clone_and_grow(&a, w, &snapshot).await;
    delete_transient(&a, &snapshot.id).await;
    made.map(|s| (a, s))
}

/// Delete a transient clone snapshot; a failure is logged (a later DeleteVolume of the
/// source or a retry removes it).
pub async fn delete_transient(a: &Appliance, snapshot: &str) {
    let delete = Request::SnapshotDelete(SnapshotRef {
        snapshot: snapshot.to_string(),
        share: None,
        pool: None,
    });
    if let Err(e) = objects::found(a.call(delete).await) {
        log::warn!(
            "appliance {}: transient clone snapshot {snapshot} stays: {}",
            a.name,
            e.message()
        );
    }
}

/// After a repeat of a CreateVolume from a volume: delete the transient snapshot a first
/// call that died before its delete may have left on the source (nothing when absent).
pub async fn forget_transient(svc: &ControllerService, csi_name: &str, source: &Id) {
    let Some(a) = objects::appliance(&svc.cfg, &source.appliance) else {
        return;
    };
    let delete = Request::SnapshotDelete(SnapshotRef {
        snapshot: clone_snapshot_name(csi_name),
        share: Some(source.object.clone()),
        pool: None,
    });
    if let Err(e) = objects::found(a.call(delete).await) {
        log::warn!(
            "appliance {}: transient clone snapshot stays: {}",
            a.name,
            e.message()
        );
    }
}

/// The source must be a volume of the same kind: the same protocol (a block share cannot
/// become an NFS one, nor the reverse), in the requested pool, multi-attachable when the
/// request needs it (a clone inherits that from its origin).
fn check_compatible(w: &Wanted, origin: &Share) -> Result<(), Status> {
    let protocol = origin
        .metadata
        .get(objects::META_PROTOCOL)
        .map(String::as_str);
    let same = match (protocol.and_then(Protocol::parse), w.protocol()) {
        (Some(p), q) => p == q || (p != Protocol::Nfs && q != Protocol::Nfs),
        (None, _) => false,
    };
    let bad = |why: String| Status::invalid_argument(format!("content source: {why}"));
    if !same {
        return Err(bad(format!(
            "it is a {} volume; a {} volume cannot be made from it",
            protocol.unwrap_or("non-CSI"),
            w.protocol().as_str()
        )));
    }
    if w.params.pool.as_ref().is_some_and(|p| *p != origin.pool) {
        return Err(bad(format!(
            "it is in pool {}; a clone stays in its source's pool",
            origin.pool
        )));
    }
    if w.needs.multiattach && !origin.multiattach {
        return Err(bad(
            "it is single-node; a clone of it cannot be multi-node".into()
        ));
    }
    if w.protocol() == Protocol::Nfs
        && w.needs.fs_type.is_some()
        && origin.filesystem != Some(w.nfs_fs())
    {
        return Err(bad(
            "its filesystem differs from the requested fsType".into()
        ));
    }
    Ok(())
}

/// `share.clone` of `snapshot` under the volume's name and metadata, then grown to the
/// requested size. The size is the snapshot's unless the request asks for more;
/// OUT_OF_RANGE when its limit is below the snapshot's size.
async fn clone_and_grow(a: &Appliance, w: &Wanted, snapshot: &Snapshot) -> Result<Share, Status> {
    let size = match w.req.capacity_range.as_ref() {
        Some(r) if r.required_bytes > 0 || r.limit_bytes > 0 => {
            if r.limit_bytes > 0 && (r.limit_bytes as u64) < snapshot.size {
                return Err(Status::out_of_range(format!(
                    "limit_bytes {} is below the source's size {}",
                    r.limit_bytes, snapshot.size
                )));
            }
            params::size_for(Some(r), snapshot.size, snapshot.size)?
        }
        _ => snapshot.size,
    };
    let clone = Request::ShareClone(CloneArgs {
        snapshot: snapshot.id.clone(),
        name: w.share_name.clone(),
        metadata: w.metadata.clone(),
        ..CloneArgs::default()
    });
    let share = decode_share(a, &a.call(clone).await?)?;
    grow(a, &share, size).await
}

/// `share` grown to `size` (`share.resize`), as it is when it is that big already. A
/// clone whose grow fails stays at its snapshot's size; the CO's retry of the CreateVolume
/// finishes it here (create.rs, `Repeat::Grow`).
pub async fn grow(a: &Appliance, share: &Share, size: u64) -> Result<Share, Status> {
    if share.size >= size {
        return Ok(share.clone());
    }
    let grow = Request::ShareResize(ShareResizeArgs {
        share: share.id.clone(),
        size,
        pool: None,
    });
    decode_share(a, &a.call(grow).await?)
}
