//! CreateSnapshot, DeleteSnapshot and ListSnapshots on shelf snapshots.
//!
//! A CSI snapshot is one shelf snapshot of the volume's share, its id
//! `<appliance>:<snapshot id>` (ids.rs). CSI names are unique across the plugin while shelf
//! names are unique per share, so the CSI name becomes the shelf snapshot's name
//! ([`shelf_name`]) and CreateSnapshot looks for that name on every CSI share before it
//! creates: the same name on the same source answers the existing snapshot (shelf's own
//! `snapshot.create` is idempotent by name), on another source ALREADY_EXISTS.
//!
//! Only the plugin's own snapshots are listed or deleted: those of shares this plugin
//! made (share metadata `csi.name`) whose name carries the plugin's mark
//! ([`is_plugin_snapshot`]: `csi.s.<name>` or `csi.<hex>`). A snapshot an admin took of a
//! CSI share, and the transient `csi.clone.*` snapshots of clones (clone.rs), are not CSI
//! snapshots: not listed, and NOT_FOUND to DeleteSnapshot (never deleted).

use bpfman_csi::v1::list_snapshots_response::Entry;
use bpfman_csi::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, DeleteSnapshotRequest, DeleteSnapshotResponse,
    ListSnapshotsRequest, ListSnapshotsResponse, Snapshot as CsiSnapshot,
};
use sha2::{Digest, Sha256};
use shelf::model::{validate_name, ShareState, Snapshot};
use shelf::proto::{Request, SnapshotCreateArgs, SnapshotRef};
use tonic::Status;

use super::clone::CLONE_SNAPSHOT_PREFIX;
use super::ControllerService;
use crate::ids::Id;
use crate::objects::{self, found};

/// Prefix of a shelf snapshot name derived from a hash (see [`shelf_name`]).
const HASHED_PREFIX: &str = "csi.";

/// Prefix of a CSI snapshot's shelf name that is the CSI name itself ([`snapshot_name`]).
const SNAPSHOT_PREFIX: &str = "csi.s.";

/// The shelf snapshot name for a CSI snapshot name: `csi.s.` and the name when shelf
/// accepts that (Kubernetes' `snapshot-<uuid>` names do), else [`shelf_name`]'s `csi.`
/// and a hash. Either way it starts with `csi.`, the plugin's mark.
pub fn snapshot_name(csi_name: &str) -> String {
    let marked = format!("{SNAPSHOT_PREFIX}{csi_name}");
    if validate_name("snapshot", &marked).is_ok() {
        return marked;
    }
    let hashed = shelf_name(csi_name);
    if hashed.starts_with(HASHED_PREFIX) {
        hashed
    } else {
        shelf_name(&format!("{HASHED_PREFIX}{csi_name}"))
    }
}

/// Whether a shelf snapshot (of a CSI share) is a CSI snapshot: its name has the mark
/// [`snapshot_name`] gives, and it is no transient clone snapshot.
pub fn is_plugin_snapshot(s: &Snapshot) -> bool {
    s.name.starts_with(HASHED_PREFIX) && !s.name.starts_with(CLONE_SNAPSHOT_PREFIX)
}

/// Parameter prefix the Kubernetes sidecars add (`--extra-create-metadata`); ignored.
const K8S_PARAMETER_PREFIX: &str = "csi.storage.k8s.io/";

/// The shelf snapshot name for a CSI name: the name itself when shelf accepts it (1 to 63
/// of `[A-Za-z0-9._-]`, what Kubernetes' `snapshot-<uuid>` names are), else `csi.` and 40
/// hex digits of its SHA-256. Names that start with `csi.` are always hashed, so a hashed
/// name can never equal another name taken as it is.
pub fn shelf_name(csi_name: &str) -> String {
    if validate_name("snapshot", csi_name).is_ok() && !csi_name.starts_with(HASHED_PREFIX) {
        return csi_name.to_string();
    }
    let digest = Sha256::digest(csi_name.as_bytes());
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("{HASHED_PREFIX}{hex}")
}

/// The CSI view of a shelf snapshot on `appliance`.
fn to_csi(appliance: &str, s: &Snapshot) -> CsiSnapshot {
    CsiSnapshot {
        size_bytes: i64::try_from(s.size).unwrap_or(i64::MAX),
        snapshot_id: Id::new(appliance, &s.id).to_string(),
        source_volume_id: Id::new(appliance, &s.share).to_string(),
        creation_time: Some(prost_types::Timestamp {
            seconds: s.created_at,
            nanos: 0,
        }),
        ready_to_use: s.state == ShareState::Available,
        group_snapshot_id: String::new(),
    }
}

/// `CreateSnapshot`: see the module comment.
pub async fn create_snapshot(
    svc: &ControllerService,
    req: CreateSnapshotRequest,
) -> Result<CreateSnapshotResponse, Status> {
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    if req.source_volume_id.is_empty() {
        return Err(Status::invalid_argument("source_volume_id is required"));
    }
    if let Some(k) = req
        .parameters
        .keys()
        .find(|k| !k.starts_with(K8S_PARAMETER_PREFIX))
    {
        return Err(Status::invalid_argument(format!(
            "unknown snapshot parameter {k:?}: shelf snapshots take none"
        )));
    }
    let source = Id::parse("source_volume_id", &req.source_volume_id)?;
    let _claim = svc.claim_volume(&source)?;
    let Some((appliance, share)) = objects::csi_share(&svc.cfg, &source).await? else {
        return Err(Status::not_found(format!(
            "source volume {source}: no such volume"
        )));
    };
    let name = snapshot_name(&req.name);
    if let Some(other) = named_elsewhere(svc, &name, &source).await? {
        return Err(Status::already_exists(format!(
            "snapshot name {:?} is already taken by snapshot {other} of another volume",
            req.name
        )));
    }
    let create = Request::SnapshotCreate(SnapshotCreateArgs {
        share: share.id.clone(),
        name,
        pool: None,
    });
    let v = appliance.call(create).await?;
    let snapshot: Snapshot = match shelf::client::get(&v, "snapshot") {
        Some(s) => objects::decode(&appliance, s.clone())?,
        None => return Err(Status::internal("snapshot.create answered no snapshot")),
    };
    log::info!(
        "CreateSnapshot {:?}: snapshot {} of {source}",
        req.name,
        snapshot.id
    );
    Ok(CreateSnapshotResponse {
        snapshot: Some(to_csi(&appliance.name, &snapshot)),
    })
}

/// The id of a snapshot named `name` on a CSI share other than `source`, if any. An
/// appliance that cannot be reached is skipped (with a warning): one appliance down must
/// not stop snapshots everywhere, and Kubernetes' snapshot names (`snapshot-<uid>`) never
/// repeat for another source, so what is missed is a CO's mistake, not a lost snapshot.
async fn named_elsewhere(
    svc: &ControllerService,
    name: &str,
    source: &Id,
) -> Result<Option<Id>, Status> {
    for a in objects::appliances(&svc.cfg) {
        let listed = async {
            Ok::<_, Status>((
                objects::csi_shares(&a).await?,
                objects::snapshots(&a, None).await?,
            ))
        };
        let (shares, snapshots) = match listed.await {
            Ok(both) => both,
            Err(e) if e.code() == tonic::Code::Unavailable && a.name != source.appliance => {
                log::warn!(
                    "CreateSnapshot: not checking {} for the name: {}",
                    a.name,
                    e.message()
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        for s in snapshots {
            let same_source = a.name == source.appliance && s.share == source.object;
            if s.name == name && !same_source && shares.contains_key(&s.share) {
                // `name` is marked, so `s` is a CSI snapshot.
                return Ok(Some(Id::new(&a.name, &s.id)));
            }
        }
    }
    Ok(None)
}

/// `DeleteSnapshot`: OK when the snapshot is gone or the id is none this plugin made;
/// FAILED_PRECONDITION when shelf refuses for dependents; NOT_FOUND, and never deleted,
/// for a snapshot that is not the plugin's (of a share it did not make, or without its
/// mark: an admin's, a transient clone snapshot).
pub async fn delete_snapshot(
    svc: &ControllerService,
    req: DeleteSnapshotRequest,
) -> Result<DeleteSnapshotResponse, Status> {
    if req.snapshot_id.is_empty() {
        return Err(Status::invalid_argument("snapshot_id is required"));
    }
    let Ok(id) = Id::parse("snapshot_id", &req.snapshot_id) else {
        return Ok(DeleteSnapshotResponse {});
    };
    let Some(appliance) = objects::appliance(&svc.cfg, &id.appliance) else {
        return Ok(DeleteSnapshotResponse {});
    };
    let Some(snapshot) = objects::snapshot(&appliance, &id.object).await? else {
        return Ok(DeleteSnapshotResponse {});
    };
    match objects::share(&appliance, &snapshot.share).await? {
        Some(share) if objects::is_csi(&share) && is_plugin_snapshot(&snapshot) => {}
        _ => {
            return Err(Status::not_found(format!(
                "snapshot {id} ({} of share {}) is no CSI snapshot: this plugin did not \
                 make it; delete it with shelfctl",
                snapshot.name, snapshot.share_name
            )))
        }
    }
    let delete = Request::SnapshotDelete(SnapshotRef {
        snapshot: snapshot.id.clone(),
        share: None,
        pool: None,
    });
    found(appliance.call(delete).await)?;
    log::info!("DeleteSnapshot {id}");
    Ok(DeleteSnapshotResponse {})
}

/// `ListSnapshots`: the CSI volumes' snapshots on every appliance, filtered by
/// `snapshot_id` and `source_volume_id` (an id that names nothing gives an empty list),
/// ordered by creation time, appliance and id, paged by `max_entries` with a token that
/// names the last entry returned (so entries added or removed between pages do not shift
/// the rest). A token this plugin did not make is ABORTED (CSI spec).
pub async fn list_snapshots(
    svc: &ControllerService,
    req: ListSnapshotsRequest,
) -> Result<ListSnapshotsResponse, Status> {
    let max = usize::try_from(req.max_entries)
        .map_err(|_| Status::invalid_argument("max_entries must not be negative"))?;
    let after = match req.starting_token.as_str() {
        "" => None,
        t => Some(paging::parse(t).ok_or_else(|| {
            Status::aborted(format!("starting_token {t:?} is not one this plugin made"))
        })?),
    };
    let mut all = matching(svc, &req).await?;
    all.sort_by_key(paging::key);
    let mut page: Vec<CsiSnapshot> = all
        .into_iter()
        .filter(|s| after.as_ref().is_none_or(|k| paging::key(s) > *k))
        .collect();
    let mut next_token = String::new();
    if max > 0 && page.len() > max {
        page.truncate(max);
        next_token = page.last().map(paging::token).unwrap_or_default();
    }
    Ok(ListSnapshotsResponse {
        entries: page
            .into_iter()
            .map(|s| Entry { snapshot: Some(s) })
            .collect(),
        next_token,
    })
}

/// Every snapshot that passes the request's filters, unordered.
async fn matching(
    svc: &ControllerService,
    req: &ListSnapshotsRequest,
) -> Result<Vec<CsiSnapshot>, Status> {
    let by_id = parse_filter("snapshot_id", &req.snapshot_id);
    let by_source = parse_filter("source_volume_id", &req.source_volume_id);
    let (Some(by_id), Some(by_source)) = (by_id, by_source) else {
        return Ok(Vec::new()); // a malformed id names no snapshot
    };
    let mut out = Vec::new();
    for a in objects::appliances(&svc.cfg) {
        let wanted = |id: &Option<Id>| id.as_ref().is_none_or(|i| i.appliance == a.name);
        if !wanted(&by_id) || !wanted(&by_source) {
            continue;
        }
        let shares = objects::csi_shares(&a).await?;
        let snapshots = match (&by_id, &by_source) {
            (Some(id), _) => objects::snapshot(&a, &id.object)
                .await?
                .into_iter()
                .collect(),
            (None, Some(src)) if shares.contains_key(&src.object) => {
                found(objects::snapshots(&a, Some(&src.object)).await)?.unwrap_or_default()
            }
            (None, Some(_)) => Vec::new(),
            (None, None) => objects::snapshots(&a, None).await?,
        };
        out.extend(
            snapshots
                .iter()
                .filter(|s| shares.contains_key(&s.share) && is_plugin_snapshot(s))
                .filter(|s| by_source.as_ref().is_none_or(|i| i.object == s.share))
                .map(|s| to_csi(&a.name, s)),
        );
    }
    Ok(out)
}

/// A filter id: `Some(None)` when not given, `Some(Some(id))` when well formed, `None`
/// when malformed (it then matches nothing).
fn parse_filter(what: &str, s: &str) -> Option<Option<Id>> {
    if s.is_empty() {
        return Some(None);
    }
    Id::parse(what, s).ok().map(Some)
}

mod paging;

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Snapshot {
        Snapshot {
            id: "s1".into(),
            name: name.into(),
            share: "v1".into(),
            share_name: "vol".into(),
            pool: "default".into(),
            size: 1 << 20,
            state: ShareState::Available,
            created_at: 0,
            group: None,
        }
    }

    #[test]
    fn csi_snapshot_names_carry_the_mark_and_others_do_not() {
        let k8s = "snapshot-0b0e6f1c-9d2e-4c1a-8f00-123456789abc";
        assert_eq!(snapshot_name(k8s), format!("csi.s.{k8s}"));
        let long = "x".repeat(200);
        for csi in [k8s, long.as_str(), "a b", "csi.abc", "clone.x", "-x"] {
            let n = snapshot_name(csi);
            assert!(validate_name("snapshot", &n).is_ok(), "{n}");
            assert!(is_plugin_snapshot(&named(&n)), "{csi}: {n}");
        }
        assert_ne!(snapshot_name("a b"), snapshot_name("a  b"));
        // An admin's snapshot, a transient clone snapshot: not the plugin's.
        for other in ["daily", "snapshot-1", "csi.clone.0123abcd", "csi"] {
            assert!(!is_plugin_snapshot(&named(other)), "{other}");
        }
    }

    #[test]
    fn kubernetes_names_are_kept_and_others_hashed_apart() {
        let k8s = "snapshot-0b0e6f1c-9d2e-4c1a-8f00-123456789abc";
        assert_eq!(shelf_name(k8s), k8s);
        let long = "x".repeat(200);
        for odd in [long.as_str(), "a b", "ünïcode", "-x", "csi.abc"] {
            let n = shelf_name(odd);
            assert!(n.starts_with("csi.") && n.len() == 44, "{n}");
            assert!(validate_name("snapshot", &n).is_ok(), "{n}");
        }
        assert_ne!(shelf_name("a b"), shelf_name("a  b"));
        // A hashed name given as a CSI name is hashed again, never taken as it is.
        let h = shelf_name("a b");
        assert_ne!(shelf_name(&h), h);
    }

    #[test]
    fn the_csi_view_carries_ids_time_size_and_readiness() {
        let s = Snapshot {
            id: "s1".into(),
            name: "n".into(),
            share: "v1".into(),
            share_name: "vol".into(),
            pool: "default".into(),
            size: 1 << 30,
            state: ShareState::Creating,
            created_at: 1_795_443_789,
            group: None,
        };
        let c = to_csi("a1", &s);
        assert_eq!(c.snapshot_id, "a1:s1");
        assert_eq!(c.source_volume_id, "a1:v1");
        assert_eq!(c.size_bytes, 1 << 30);
        assert_eq!(c.creation_time.unwrap().seconds, 1_795_443_789);
        assert!(!c.ready_to_use);
    }
}
