//! Expansion, listing with paging, capacity, validation and ControllerGetVolume.

use std::collections::{BTreeSet, HashMap};

use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::{
    ControllerExpandVolumeRequest, ControllerGetVolumeRequest, ControllerModifyVolumeRequest,
    GetCapacityRequest, ListVolumesRequest, Topology, ValidateVolumeCapabilitiesRequest,
    VolumeCapability,
};
use tonic::Code;

use crate::common::csi::{Csi, TOPOLOGY_KEY};
use crate::common::t;
use crate::helpers::*;

const GIB: u64 = 1 << 30;

/// ControllerExpandVolume to `required` with `cap`: (capacity, node expansion required).
fn expand(
    csi: &Csi,
    id: &str,
    required: i64,
    cap: Option<VolumeCapability>,
) -> Result<(i64, bool), tonic::Status> {
    let mut c = csi.controller.clone();
    csi.block_on(c.controller_expand_volume(ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: range(required, 0),
        volume_capability: cap,
        ..Default::default()
    }))
    .map(|r| {
        let r = r.into_inner();
        (r.capacity_bytes, r.node_expansion_required)
    })
}

#[test]
fn expand_grows_the_share_and_says_who_grows_the_filesystem() {
    let csi = Csi::controller("expand", &[4 * GIB]);
    let v = created(&csi, request("grow", 64 * MIB));
    let mount_cap = Some(mount(Mode::SingleNodeWriter, "ext4"));
    assert_eq!(
        expand(&csi, &v.volume_id, 100_000_000, mount_cap.clone()).unwrap(),
        (100_000_256, true)
    );
    assert_eq!(
        expand(
            &csi,
            &v.volume_id,
            128 * MIB,
            Some(block(Mode::SingleNodeWriter))
        )
        .unwrap(),
        (128 * MIB, true),
        "a raw block volume's node rescans its session"
    );
    // Already as big: nothing to do, the current size.
    assert_eq!(
        expand(&csi, &v.volume_id, MIB, mount_cap.clone()).unwrap(),
        (128 * MIB, true)
    );
    let d = &csi.appliance("a1").rig.d;
    let share = d.ok("share.show", vec![("share", t(&share_id(&v)))]);
    assert_eq!(share_size(&share), 128 << 20);
    let mut r = request("grow-nfs", 0);
    r.parameters = params(&[("protocol", "nfs")]);
    let nfs = created(&csi, r);
    assert_eq!(
        expand(&csi, &nfs.volume_id, 2 * GIB as i64, mount_cap.clone()).unwrap(),
        (2 * GIB as i64, false)
    );
    for (id, code) in [
        ("a1:00000000", Code::NotFound),
        ("garbage", Code::NotFound),
        ("", Code::InvalidArgument),
    ] {
        assert_eq!(
            expand(&csi, id, GIB as i64, None).unwrap_err().code(),
            code,
            "{id}"
        );
    }
    let e = expand(&csi, &v.volume_id, 0, None).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

fn share_size(share: &ciborium::Value) -> u64 {
    shelf::client::get_u64(share, "size").unwrap()
}

#[test]
fn list_pages_across_appliances_and_capacity_is_per_segment() {
    let csi = Csi::controller("list", &[2 * GIB, 6 * GIB]);
    let mut made = BTreeSet::new();
    for (i, seg) in ["a1", "a2", "a1", "a2", "a2"].iter().enumerate() {
        let mut r = request(&format!("vol-{i}"), MIB);
        r.accessibility_requirements = topology(&[seg], &[]);
        made.insert(created(&csi, r).volume_id);
    }
    let mut c = csi.controller.clone();
    let mut seen = BTreeSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = csi
            .block_on(c.list_volumes(ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            }))
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        for e in &page.entries {
            assert!(
                seen.insert(e.volume.as_ref().unwrap().volume_id.clone()),
                "twice: {e:?}"
            );
        }
        pages += 1;
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(seen, made);
    assert_eq!(pages, 3);
    let all = csi
        .block_on(c.list_volumes(ListVolumesRequest::default()))
        .unwrap()
        .into_inner();
    assert_eq!(all.entries.len(), 5);
    assert!(all.next_token.is_empty());
    for bad in ["nonsense", "a9/abc", "a1/../x"] {
        let e = csi
            .block_on(c.list_volumes(ListVolumesRequest {
                max_entries: 1,
                starting_token: bad.into(),
            }))
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{bad}");
    }
    let e = csi
        .block_on(c.list_volumes(ListVolumesRequest {
            max_entries: -1,
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Capacity: per segment, the bigger appliance offers more; together, the sum.
    let capacity = |segment: Option<&str>, parameters: &[(&str, &str)]| {
        let req = GetCapacityRequest {
            volume_capabilities: vec![],
            parameters: params(parameters),
            accessible_topology: segment.map(|s| Topology {
                segments: HashMap::from([(TOPOLOGY_KEY.to_string(), s.to_string())]),
            }),
        };
        let mut c = csi.controller.clone();
        csi.block_on(c.get_capacity(req)).map(|r| r.into_inner())
    };
    let a1 = capacity(Some("a1"), &[]).unwrap();
    let a2 = capacity(Some("a2"), &[]).unwrap();
    let both = capacity(None, &[]).unwrap();
    assert!(
        a1.available_capacity > 0 && a2.available_capacity > a1.available_capacity,
        "{a1:?} {a2:?}"
    );
    assert_eq!(
        both.available_capacity,
        a1.available_capacity + a2.available_capacity
    );
    assert_eq!(both.maximum_volume_size, Some(a2.available_capacity));
    assert_eq!(capacity(Some("a9"), &[]).unwrap().available_capacity, 0);
    assert_eq!(
        capacity(None, &[("pool", "nope")])
            .unwrap()
            .available_capacity,
        0
    );
    assert_eq!(
        capacity(None, &[("protocol", "nfs")])
            .unwrap()
            .minimum_volume_size,
        Some(300 * MIB)
    );
    assert_eq!(
        capacity(None, &[("colour", "red")]).unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[test]
fn validate_and_get_volume_answer_for_the_volume_as_made() {
    let csi = Csi::controller("validate", &[4 * GIB]);
    let single = created(&csi, request("single", MIB));
    let mut r = request("shared", 0);
    r.parameters = params(&[("protocol", "nfs")]);
    r.volume_capabilities = vec![mount(Mode::MultiNodeMultiWriter, "")];
    let shared = created(&csi, r);
    let validate = |id: &str, caps: Vec<VolumeCapability>, p: &[(&str, &str)]| {
        let mut c = csi.controller.clone();
        csi.block_on(
            c.validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                volume_id: id.into(),
                volume_capabilities: caps,
                parameters: params(p),
                ..Default::default()
            }),
        )
        .map(|r| r.into_inner())
    };
    let ok = validate(
        &single.volume_id,
        vec![mount(Mode::SingleNodeWriter, "ext4")],
        &[],
    )
    .unwrap();
    assert!(ok.confirmed.is_some(), "{ok:?}");
    assert!(
        validate(&single.volume_id, vec![block(Mode::SingleNodeWriter)], &[])
            .unwrap()
            .confirmed
            .is_some()
    );
    for (id, caps, p) in [
        (
            &single.volume_id,
            vec![block(Mode::MultiNodeMultiWriter)],
            &[][..],
        ),
        (
            &single.volume_id,
            vec![mount(Mode::SingleNodeWriter, "")],
            &[("protocol", "nfs")][..],
        ),
        (
            &shared.volume_id,
            vec![block(Mode::SingleNodeWriter)],
            &[][..],
        ),
    ] {
        let r = validate(id, caps, p).unwrap();
        assert!(r.confirmed.is_none() && !r.message.is_empty(), "{r:?}");
    }
    assert!(validate(
        &shared.volume_id,
        vec![mount(Mode::MultiNodeMultiWriter, "nfs")],
        &[]
    )
    .unwrap()
    .confirmed
    .is_some());
    assert_eq!(
        validate("a1:00000000", vec![block(Mode::SingleNodeWriter)], &[])
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        validate(&single.volume_id, vec![], &[]).unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        validate("", vec![block(Mode::SingleNodeWriter)], &[])
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let mut c = csi.controller.clone();
    let got = csi
        .block_on(c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: shared.volume_id.clone(),
        }))
        .unwrap()
        .into_inner();
    let v = got.volume.unwrap();
    assert_eq!(
        (v.volume_id.as_str(), v.capacity_bytes),
        (shared.volume_id.as_str(), shared.capacity_bytes)
    );
    assert_eq!(v.volume_context["protocol"], "nfs");
    delete(&csi, &shared.volume_id).unwrap();
    let e = csi
        .block_on(c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: shared.volume_id.clone(),
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = csi
        .block_on(c.controller_modify_volume(ControllerModifyVolumeRequest {
            volume_id: single.volume_id.clone(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}
