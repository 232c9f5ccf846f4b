//! Clones (from volumes and snapshots), expansion, deletion, listing, capacity,
//! validation and ControllerGetVolume, against two real appliances.

use bpfman_csi::v1::{ControllerGetVolumeRequest, CreateSnapshotRequest, ListVolumesRequest};
use ciborium::Value;
use sha2::Digest;
use tonic::Code;

use crate::common::csi::Csi;
use crate::common::{connector, field, n, t};
use crate::helpers::*;

const GIB: u64 = 1 << 30;

/// Snapshots of a share, by name.
fn snapshot_names(csi: &Csi, appliance: &str, share: &str) -> Vec<String> {
    let d = &csi.appliance(appliance).rig.d;
    match d.ok("snapshot.list", vec![("share", t(share))]) {
        Value::Array(a) => a.iter().map(|s| field(s, "name")).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn clones_of_volumes_and_snapshots_and_what_deleting_them_needs() {
    let csi = Csi::controller("clones", &[2 * GIB, 4 * GIB]);
    let mut r = request("src", 64 * MIB);
    r.accessibility_requirements = topology(&["a1"], &[]);
    let src = created(&csi, r);
    // A clone of a volume: on its appliance, grown as asked, no snapshot left behind.
    let mut r = request("copy", 128 * MIB);
    r.volume_content_source = from_volume(&src.volume_id);
    let copy = created(&csi, r.clone());
    assert_eq!(placed_on(&copy), "a1");
    assert_eq!(copy.capacity_bytes, 128 * MIB);
    assert_eq!(copy.content_source, r.volume_content_source);
    assert!(snapshot_names(&csi, "a1", &share_id(&src)).is_empty());
    assert_eq!(
        created(&csi, r.clone()).volume_id,
        copy.volume_id,
        "a repeat"
    );
    // A transient snapshot a first call left behind (it died before deleting it) is
    // removed by the CO's retry.
    let digest = sha2::Sha256::digest(b"copy");
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let d = &csi.appliance("a1").rig.d;
    let left = format!("csi.clone.{hex}");
    d.ok(
        "snapshot.create",
        vec![("share", t(&share_id(&src))), ("name", t(&left))],
    );
    assert_eq!(snapshot_names(&csi, "a1", &share_id(&src)), [left]);
    assert_eq!(created(&csi, r).volume_id, copy.volume_id);
    assert!(snapshot_names(&csi, "a1", &share_id(&src)).is_empty());
    // Without a size, the source's.
    let mut r = request("copy-same", 0);
    r.capacity_range = None;
    r.volume_content_source = from_volume(&src.volume_id);
    let same = created(&csi, r);
    assert_eq!(same.capacity_bytes, 64 * MIB);
    // Sources that are missing, elsewhere, of another kind, or bigger than the limit.
    let gone = format!("a1:{}", "0".repeat(8));
    for (name, source, code) in [
        ("m1", from_volume(&gone), Code::NotFound),
        ("m2", from_volume("garbage"), Code::NotFound),
        ("m3", from_snapshot(&gone), Code::NotFound),
        ("m4", from_volume("a9:abc"), Code::NotFound),
    ] {
        let mut r = request(name, MIB);
        r.volume_content_source = source;
        refused(&csi, r, code);
    }
    let mut r = request("wrong-seg", MIB);
    r.volume_content_source = from_volume(&src.volume_id);
    r.accessibility_requirements = topology(&["a2"], &[]);
    refused(&csi, r, Code::ResourceExhausted);
    let mut r = request("wrong-kind", 0);
    r.volume_content_source = from_volume(&src.volume_id);
    r.parameters = params(&[("protocol", "nfs")]);
    refused(&csi, r, Code::InvalidArgument);
    let mut r = request("too-tight", 0);
    r.capacity_range = range(0, 32 * MIB);
    r.volume_content_source = from_volume(&src.volume_id);
    refused(&csi, r, Code::OutOfRange);
    // The name of a clone again with another source: ALREADY_EXISTS.
    let mut other = request("copy", 128 * MIB);
    other.volume_content_source = from_volume(&same.volume_id);
    let m = refused(&csi, other, Code::AlreadyExists);
    assert!(m.contains("content source"), "{m}");

    // From a CSI snapshot: cloned and grown; the source then has a snapshot and cannot go.
    let mut c = csi.controller.clone();
    let snap = csi
        .block_on(c.create_snapshot(CreateSnapshotRequest {
            source_volume_id: src.volume_id.clone(),
            name: "snap-1".into(),
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let mut r = request("restored", 96 * MIB);
    r.volume_content_source = from_snapshot(&snap.snapshot_id);
    let restored = created(&csi, r);
    assert_eq!(restored.capacity_bytes, 96 * MIB);
    let e = delete(&csi, &src.volume_id).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("snapshot"), "{}", e.message());
    csi.appliance("a1").rig.d.ok(
        "snapshot.delete",
        vec![("snapshot", t(&share_id_of(&snap.snapshot_id)))],
    );
    // A leftover transient clone snapshot does not hold the source back.
    let d = &csi.appliance("a1").rig.d;
    d.ok(
        "snapshot.create",
        vec![
            ("share", t(&share_id(&src))),
            ("name", t("csi.clone.0123456789abcdef")),
        ],
    );
    // Clones are independent: the source goes first, then each clone; twice is fine.
    delete(&csi, &src.volume_id).unwrap();
    for v in [&copy, &same, &restored, &src] {
        delete(&csi, &v.volume_id).unwrap();
        delete(&csi, &v.volume_id).unwrap();
    }
    delete(&csi, "garbage").unwrap();
    delete(&csi, "a9:abc").unwrap();
    assert_eq!(delete(&csi, "").unwrap_err().code(), Code::InvalidArgument);
}

fn share_id_of(id: &str) -> String {
    id.split_once(':').unwrap().1.to_string()
}

#[test]
fn attached_volumes_are_not_deleted_and_non_csi_shares_are_not_volumes() {
    let csi = Csi::controller("attached", &[2 * GIB]);
    let v = created(&csi, request("busy", 16 * MIB));
    let d = &csi.appliance("a1").rig.d;
    let host = connector("iqn.2026-12.org.example:node-1", "127.0.0.1", "node-1");
    let share = || ("share", t(&share_id(&v)));
    d.ok("share.attach", vec![share(), ("connector", host.clone())]);
    let e = delete(&csi, &v.volume_id).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("node-1"), "{}", e.message());
    d.ok("share.detach", vec![share(), ("connector", host)]);
    // The export the attach made stays after the detach; the delete takes it along.
    delete(&csi, &v.volume_id).unwrap();
    d.err("share.show", vec![share()], "not_found");
    // A share made outside the plugin is no volume: not listed, not deleted, not found.
    let r = d.ok(
        "share.create",
        vec![("name", t("admin")), ("size", n(1 << 20))],
    );
    let id = format!("a1:{}", field(crate::common::sub(&r, "share"), "id"));
    delete(&csi, &id).unwrap();
    d.ok("share.show", vec![("share", t("admin"))]);
    let mut c = csi.controller.clone();
    let e = csi
        .block_on(c.controller_get_volume(ControllerGetVolumeRequest { volume_id: id }))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let list = csi
        .block_on(c.list_volumes(ListVolumesRequest::default()))
        .unwrap()
        .into_inner();
    assert!(list.entries.is_empty(), "{list:?}");
}

#[test]
fn a_clone_whose_grow_failed_is_finished_by_the_retry() {
    let csi = Csi::controller("clone-grow", &[GIB]);
    let thick = || params(&[("sparse", "false")]);
    let mut r = request("thick-src", 16 * MIB);
    r.parameters = thick();
    let src = created(&csi, r);
    let mut r = request("filler", 700 * MIB);
    r.parameters = thick();
    let filler = created(&csi, r);
    // The clone is made at the source's size; growing it (preallocated) finds no room.
    let mut r = request("thick-copy", 400 * MIB);
    r.parameters = thick();
    r.volume_content_source = from_volume(&src.volume_id);
    refused(&csi, r.clone(), Code::ResourceExhausted);
    let d = &csi.appliance("a1").rig.d;
    let left = d.ok("share.show", vec![("share", t("thick-copy"))]);
    assert_eq!(shelf::client::get_u64(&left, "size"), Some(16 << 20));
    // With room again, the CO's retry of the same request finishes the clone. XFS frees
    // a deleted file's blocks in the background, so the CO may see no_space a few times
    // more, as it would.
    delete(&csi, &filler.volume_id).unwrap();
    let mut tries = 0;
    let copy = loop {
        match create(&csi, r.clone()) {
            Err(e) if e.code() == Code::ResourceExhausted && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(copy.capacity_bytes, 400 * MIB);
    assert_eq!(created(&csi, r).volume_id, copy.volume_id, "a repeat");
    // Still larger than a request allows: another size.
    let mut small = request("thick-copy", 16 * MIB);
    small.capacity_range = range(16 * MIB, 16 * MIB);
    small.parameters = thick();
    small.volume_content_source = from_volume(&src.volume_id);
    refused(&csi, small, Code::AlreadyExists);
}
