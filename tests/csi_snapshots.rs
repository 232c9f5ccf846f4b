//! CreateSnapshot, DeleteSnapshot and ListSnapshots through the real `shelf-csi` gRPC
//! socket against real shelfd appliances (tests/common/csi.rs): idempotency by name, the
//! codes for every refusal, the filters, and paging that survives changes between pages.
#![allow(clippy::result_large_err)] // the helpers answer tonic's Status, as the RPCs do

mod common;

use std::collections::{BTreeSet, HashMap};

use bpfman_csi::v1::volume_capability::{access_mode, AccessMode, AccessType, BlockVolume};
use bpfman_csi::v1::volume_content_source;
use bpfman_csi::v1::{
    CapacityRange, CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest,
    ListSnapshotsRequest, ListSnapshotsResponse, Snapshot, Topology, TopologyRequirement,
    VolumeCapability, VolumeContentSource,
};
use common::csi::Csi;
use common::{field, n, sub, t, Daemon};
use tonic::Code;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A block volume made by CreateVolume on `appliance`; its volume id.
fn csi_volume(csi: &Csi, appliance: &str, name: &str, size: u64) -> String {
    let mut c = csi.controller.clone();
    let req = CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: size as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![block()],
        parameters: HashMap::from([("protocol".to_string(), "iscsi".to_string())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![Topology {
                segments: Csi::segment(appliance),
            }],
            preferred: vec![],
        }),
        ..Default::default()
    };
    let v = csi.block_on(c.create_volume(req)).unwrap().into_inner();
    let id = v.volume.unwrap().volume_id;
    assert!(id.starts_with(&format!("{appliance}:")), "{id}");
    id
}

/// A single-node block capability.
fn block() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

/// A share this plugin did not make (no `csi.name`), with one snapshot; (share id,
/// snapshot id).
fn foreign_share_with_snapshot(d: &Daemon) -> (String, String) {
    let share = d.ok(
        "share.create",
        vec![("name", t("foreign")), ("size", n(MIB))],
    );
    let id = field(sub(&share, "share"), "id");
    let snap = d.ok(
        "snapshot.create",
        vec![("share", t(&id)), ("name", t("daily"))],
    );
    (id, field(sub(&snap, "snapshot"), "id"))
}

fn create(csi: &Csi, source: &str, name: &str) -> Result<Snapshot, tonic::Status> {
    create_with(csi, source, name, HashMap::new())
}

fn create_with(
    csi: &Csi,
    source: &str,
    name: &str,
    parameters: HashMap<String, String>,
) -> Result<Snapshot, tonic::Status> {
    let mut c = csi.controller.clone();
    let req = CreateSnapshotRequest {
        source_volume_id: source.into(),
        name: name.into(),
        secrets: HashMap::new(),
        parameters,
    };
    csi.block_on(c.create_snapshot(req))
        .map(|r| r.into_inner().snapshot.expect("a snapshot"))
}

fn delete(csi: &Csi, id: &str) -> Result<(), tonic::Status> {
    let mut c = csi.controller.clone();
    let req = DeleteSnapshotRequest {
        snapshot_id: id.into(),
        secrets: HashMap::new(),
    };
    csi.block_on(c.delete_snapshot(req)).map(|_| ())
}

fn list(csi: &Csi, req: ListSnapshotsRequest) -> Result<ListSnapshotsResponse, tonic::Status> {
    let mut c = csi.controller.clone();
    csi.block_on(c.list_snapshots(req)).map(|r| r.into_inner())
}

fn ids(r: &ListSnapshotsResponse) -> Vec<String> {
    r.entries
        .iter()
        .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
        .collect()
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    r.expect_err("the call should have failed").code()
}

#[test]
fn create_snapshot_is_idempotent_by_name_and_refuses_with_the_right_codes() {
    let csi = Csi::controller("snap-create", &[GIB, GIB]);
    let v1 = csi_volume(&csi, "a1", "pvc-1", 64 * MIB);
    let v2 = csi_volume(&csi, "a1", "pvc-2", MIB);
    let v3 = csi_volume(&csi, "a2", "pvc-3", MIB);

    let s = create(&csi, &v1, "snapshot-1").unwrap();
    assert!(s.snapshot_id.starts_with("a1:"), "{s:?}");
    assert_eq!(s.source_volume_id, v1);
    assert_eq!(s.size_bytes, (64 * MIB) as i64);
    assert!(s.ready_to_use);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let taken = s.creation_time.clone().unwrap().seconds;
    assert!((now - 60..=now + 5).contains(&taken), "{taken} vs {now}");
    // The shelf snapshot is there, named as the CSI snapshot with the plugin's mark.
    let shelf_id = s.snapshot_id.split_once(':').unwrap().1;
    let shown = csi
        .appliance("a1")
        .rig
        .d
        .ok("snapshot.show", vec![("snapshot", t(shelf_id))]);
    assert_eq!(field(&shown, "name"), "csi.s.snapshot-1");

    // The same name on the same source: the same snapshot.
    assert_eq!(create(&csi, &v1, "snapshot-1").unwrap(), s);
    // On another source, here or on another appliance: ALREADY_EXISTS.
    assert_eq!(code(create(&csi, &v2, "snapshot-1")), Code::AlreadyExists);
    assert_eq!(code(create(&csi, &v3, "snapshot-1")), Code::AlreadyExists);
    // A name shelf would refuse is kept apart by its hash, and is idempotent too.
    let odd = format!("{} with spaces/and slashes", "x".repeat(100));
    let o = create(&csi, &v1, &odd).unwrap();
    assert_eq!(create(&csi, &v1, &odd).unwrap().snapshot_id, o.snapshot_id);
    assert_ne!(o.snapshot_id, s.snapshot_id);
    assert_eq!(code(create(&csi, &v2, &odd)), Code::AlreadyExists);
    // Snapshots on the second appliance have its ids.
    let s3 = create(&csi, &v3, "snapshot-3").unwrap();
    assert!(s3.snapshot_id.starts_with("a2:"), "{s3:?}");

    // Sources that are no volume of this plugin: NOT_FOUND.
    let (foreign, _) = foreign_share_with_snapshot(&csi.appliance("a1").rig.d);
    for source in [
        "a1:0b0e6f1c-9d2e-4c1a-8f00-123456789abc".to_string(),
        "nonsense".to_string(),
        "a9:0b0e6f1c-9d2e-4c1a-8f00-123456789abc".to_string(),
        format!("a1:{foreign}"),
    ] {
        assert_eq!(
            code(create(&csi, &source, "snapshot-x")),
            Code::NotFound,
            "{source}"
        );
    }
    // Missing fields and unknown parameters: INVALID_ARGUMENT; the sidecars' are ignored.
    assert_eq!(code(create(&csi, &v1, "")), Code::InvalidArgument);
    assert_eq!(code(create(&csi, "", "snapshot-x")), Code::InvalidArgument);
    let odd_param = HashMap::from([("compression".to_string(), "on".to_string())]);
    assert_eq!(
        code(create_with(&csi, &v1, "snapshot-x", odd_param)),
        Code::InvalidArgument
    );
    let sidecar = HashMap::from([(
        "csi.storage.k8s.io/volumesnapshot/name".to_string(),
        "snap".to_string(),
    )]);
    create_with(&csi, &v1, "snapshot-y", sidecar).unwrap();
}

#[test]
fn delete_snapshot_is_idempotent_and_leaves_clones_and_foreign_snapshots_alone() {
    let csi = Csi::controller("snap-delete", &[GIB]);
    let d = &csi.appliance("a1").rig.d;
    let v1 = csi_volume(&csi, "a1", "pvc-1", MIB);
    let s = create(&csi, &v1, "snapshot-1").unwrap();
    let shelf_id = s.snapshot_id.split_once(':').unwrap().1.to_string();
    // A volume made from it by CreateVolume is independent of it.
    let mut c = csi.controller.clone();
    let from_snapshot = CreateVolumeRequest {
        name: "pvc-clone".into(),
        volume_capabilities: vec![block()],
        parameters: HashMap::from([("protocol".to_string(), "iscsi".to_string())]),
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: s.snapshot_id.clone(),
                },
            )),
        }),
        ..Default::default()
    };
    let clone = csi
        .block_on(c.create_volume(from_snapshot))
        .unwrap()
        .into_inner();
    let clone_id = clone
        .volume
        .unwrap()
        .volume_id
        .split_once(':')
        .unwrap()
        .1
        .to_string();

    delete(&csi, &s.snapshot_id).unwrap();
    d.err(
        "snapshot.show",
        vec![("snapshot", t(&shelf_id))],
        "not_found",
    );
    d.ok("share.show", vec![("share", t(&clone_id))]);
    // Gone already, malformed, on an appliance not configured: OK.
    delete(&csi, &s.snapshot_id).unwrap();
    delete(&csi, "nonsense").unwrap();
    delete(&csi, "a9:0b0e6f1c-9d2e-4c1a-8f00-123456789abc").unwrap();
    assert_eq!(code(delete(&csi, "")), Code::InvalidArgument);
    // A snapshot the plugin did not make is no CSI snapshot: NOT_FOUND, never deleted,
    // never listed. Of a share it did not make; an admin's of a CSI volume; a transient
    // clone snapshot (clone.rs).
    let (_, foreign_snap) = foreign_share_with_snapshot(d);
    let v1_share = v1.split_once(':').unwrap().1.to_string();
    let mut others = vec![foreign_snap];
    for name in ["daily", "csi.clone.0123456789abcdef0123456789abcdef"] {
        let r = d.ok(
            "snapshot.create",
            vec![("share", t(&v1_share)), ("name", t(name))],
        );
        others.push(field(sub(&r, "snapshot"), "id"));
    }
    let listed = list(&csi, ListSnapshotsRequest::default()).unwrap();
    for other in &others {
        let err = delete(&csi, &format!("a1:{other}")).unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        d.ok("snapshot.show", vec![("snapshot", t(other))]);
        assert!(!ids(&listed).contains(&format!("a1:{other}")), "{listed:?}");
        let by_id = ListSnapshotsRequest {
            snapshot_id: format!("a1:{other}"),
            ..Default::default()
        };
        assert!(list(&csi, by_id).unwrap().entries.is_empty());
    }
    // Once deleted, its name is free for another volume.
    let v2 = csi_volume(&csi, "a1", "pvc-2", MIB);
    let again = create(&csi, &v2, "snapshot-1").unwrap();
    assert_eq!(again.source_volume_id, v2);
    assert_ne!(again.snapshot_id, s.snapshot_id);
}

#[test]
fn list_snapshots_filters_and_pages_across_appliances() {
    let mut csi = Csi::controller("snap-list", &[GIB, GIB]);
    let v1 = csi_volume(&csi, "a1", "pvc-1", MIB);
    let v2 = csi_volume(&csi, "a2", "pvc-2", MIB);
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(create(&csi, &v1, &format!("snap-1-{i}")).unwrap());
        made.push(create(&csi, &v2, &format!("snap-2-{i}")).unwrap());
    }
    // A foreign share's snapshot is never listed.
    let (foreign, foreign_snap) = foreign_share_with_snapshot(&csi.appliance("a1").rig.d);
    let all: BTreeSet<String> = made.iter().map(|s| s.snapshot_id.clone()).collect();

    let everything = list(&csi, ListSnapshotsRequest::default()).unwrap();
    assert_eq!(ids(&everything).into_iter().collect::<BTreeSet<_>>(), all);
    assert_eq!(everything.next_token, "");
    // Each entry is what CreateSnapshot answered.
    for e in &everything.entries {
        let s = e.snapshot.as_ref().unwrap();
        assert!(made.contains(s), "{s:?}");
    }

    // By snapshot id, by source volume, by both.
    let one = &made[3];
    let by_id = ListSnapshotsRequest {
        snapshot_id: one.snapshot_id.clone(),
        ..Default::default()
    };
    assert_eq!(
        ids(&list(&csi, by_id).unwrap()),
        std::slice::from_ref(&one.snapshot_id)
    );
    let by_source = ListSnapshotsRequest {
        source_volume_id: v2.clone(),
        ..Default::default()
    };
    let of_v2 = ids(&list(&csi, by_source).unwrap());
    assert_eq!(of_v2.len(), 3);
    assert!(of_v2.iter().all(|id| id.starts_with("a2:")), "{of_v2:?}");
    let mismatch = ListSnapshotsRequest {
        snapshot_id: one.snapshot_id.clone(),
        source_volume_id: v1.clone(),
        ..Default::default()
    };
    assert!(list(&csi, mismatch).unwrap().entries.is_empty());
    // Ids that name nothing of this plugin's: an empty list, not an error.
    for (snapshot_id, source_volume_id) in [
        ("nonsense".to_string(), String::new()),
        (String::new(), "nonsense".to_string()),
        (
            "a1:0b0e6f1c-9d2e-4c1a-8f00-123456789abc".to_string(),
            String::new(),
        ),
        (format!("a1:{foreign_snap}"), String::new()),
        (String::new(), format!("a1:{foreign}")),
    ] {
        let req = ListSnapshotsRequest {
            snapshot_id,
            source_volume_id,
            ..Default::default()
        };
        assert!(
            list(&csi, req.clone()).unwrap().entries.is_empty(),
            "{req:?}"
        );
    }

    // Pages of 4: every snapshot once; a snapshot deleted and one added between pages
    // do not shift the rest.
    let page = |token: &str| {
        let req = ListSnapshotsRequest {
            max_entries: 4,
            starting_token: token.into(),
            ..Default::default()
        };
        list(&csi, req).unwrap()
    };
    let first = page("");
    assert_eq!(first.entries.len(), 4);
    assert_ne!(first.next_token, "");
    let last_of_first = ids(&first)[3].clone();
    delete(&csi, &last_of_first).unwrap();
    let late = create(&csi, &v1, "snap-late").unwrap();
    let second = page(&first.next_token);
    let mut seen: Vec<String> = ids(&first);
    seen.extend(ids(&second));
    let mut token = second.next_token.clone();
    while !token.is_empty() {
        let p = page(&token);
        seen.extend(ids(&p));
        token = p.next_token;
    }
    // Every snapshot there from the start, exactly once; the late one at most once (it
    // sorts before or after the cursor depending on its id).
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a snapshot listed twice: {seen:?}"
    );
    let mut without_late = unique.clone();
    without_late.remove(&late.snapshot_id);
    assert_eq!(without_late, all);

    // A token this plugin did not make: ABORTED; a negative page size: INVALID_ARGUMENT.
    for bad in ["garbage", "12/../etc", "7"] {
        let req = ListSnapshotsRequest {
            starting_token: bad.into(),
            ..Default::default()
        };
        assert_eq!(code(list(&csi, req)), Code::Aborted, "{bad}");
    }
    let negative = ListSnapshotsRequest {
        max_entries: -1,
        ..Default::default()
    };
    assert_eq!(code(list(&csi, negative)), Code::InvalidArgument);

    // An appliance down: the list is UNAVAILABLE naming it (not a silently short list),
    // while snapshots of volumes elsewhere are still taken.
    csi.appliances[1].rig.d.stop();
    let e = list(&csi, ListSnapshotsRequest::default()).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("a2"), "{}", e.message());
    create(&csi, &v1, "snap-while-a2-is-down").unwrap();
    assert_eq!(code(create(&csi, &v2, "snap-x")), Code::Unavailable);
}
