//! The CSI Identity and Controller services over their real gRPC socket: the real
//! `shelf-csi` binary against real shelfd appliances (tests/common/csi.rs). Volume
//! creation, repeats, sizes, parameters, capabilities and placement are here; clones and
//! deletion in csi_controller/lifecycle.rs; expansion, listing, capacity, validation in
//! csi_controller/queries.rs.

// The helpers return tonic's Status (176 bytes) as the RPCs do.
#![allow(clippy::result_large_err)]

mod common;
#[path = "csi_controller/helpers.rs"]
mod helpers;
#[path = "csi_controller/lifecycle.rs"]
mod lifecycle;
#[path = "csi_controller/queries.rs"]
mod queries;

use bpfman_csi::v1::controller_service_capability::{rpc::Type as Rpc, Type as CapType};
use bpfman_csi::v1::plugin_capability::{self, service};
use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::{
    ControllerGetCapabilitiesRequest, GetPluginCapabilitiesRequest, GetPluginInfoRequest,
    ProbeRequest,
};
use std::time::{Duration, Instant};

use bpfman_csi::v1::identity_client::IdentityClient;
use ciborium::Value;
use common::csi::{Csi, DRIVER, TOPOLOGY_KEY};
use common::{field, sub, t};
use helpers::*;
use tonic::Code;

const GIB: u64 = 1 << 30;

#[test]
fn identity_names_the_driver_and_probes_every_appliance() {
    let mut csi = Csi::controller("identity", &[GIB, GIB]);
    let mut id = csi.identity.clone();
    let info = csi
        .block_on(id.get_plugin_info(GetPluginInfoRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(info.name, DRIVER);
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = csi
        .block_on(id.get_plugin_capabilities(GetPluginCapabilitiesRequest {}))
        .unwrap()
        .into_inner();
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    assert!(services.contains(&(service::Type::ControllerService as i32)));
    assert!(services.contains(&(service::Type::VolumeAccessibilityConstraints as i32)));
    let probe = csi
        .block_on(id.probe(ProbeRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    // The controller advertises exactly what works.
    let mut c = csi.controller.clone();
    let caps = csi
        .block_on(c.controller_get_capabilities(ControllerGetCapabilitiesRequest {}))
        .unwrap()
        .into_inner();
    let mut rpcs: Vec<i32> = caps
        .capabilities
        .iter()
        .map(|c| match &c.r#type {
            Some(CapType::Rpc(r)) => r.r#type,
            other => panic!("{other:?}"),
        })
        .collect();
    rpcs.sort();
    let mut want: Vec<i32> = [
        Rpc::CreateDeleteVolume,
        Rpc::PublishUnpublishVolume,
        Rpc::PublishReadonly,
        Rpc::ListVolumes,
        Rpc::GetCapacity,
        Rpc::CreateDeleteSnapshot,
        Rpc::ListSnapshots,
        Rpc::CloneVolume,
        Rpc::ExpandVolume,
        Rpc::GetVolume,
        Rpc::SingleNodeMultiWriter,
    ]
    .iter()
    .map(|r| *r as i32)
    .collect();
    want.sort();
    assert_eq!(rpcs, want);
    // One appliance down, or taking a connection and never answering: still ready, and
    // quickly (the livenessprobe sidecar gives up after 1 s by default and restarts the
    // controller).
    csi.appliances[1].rig.d.stop();
    let probe = |csi: &Csi, id: &mut IdentityClient<_>| {
        let started = Instant::now();
        let r = csi
            .block_on(id.probe(ProbeRequest {}))
            .unwrap()
            .into_inner();
        (r.ready, started.elapsed())
    };
    let (ready, took) = probe(&csi, &mut id);
    assert_eq!(ready, Some(true));
    assert!(took < Duration::from_secs(1), "{took:?}");
    let socket = csi.appliances[1].rig.d.socket.clone();
    let _ = std::fs::remove_file(&socket);
    let silent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let (ready, took) = probe(&csi, &mut id);
    assert_eq!(ready, Some(true));
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Every appliance down: not ready (no error: a restart would not help), in time.
    csi.appliances[0].rig.d.stop();
    let (ready, took) = probe(&csi, &mut id);
    assert_eq!(ready, Some(false));
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(silent);
    assert!(csi.is_running());
}

#[test]
fn create_is_idempotent_by_name_and_refuses_other_parameters() {
    let csi = Csi::controller("create", &[2 * GIB, 6 * GIB]);
    let mut req = request("pvc-0001", 64 * MIB);
    req.parameters = params(&[
        ("csi.storage.k8s.io/pvc/name", "data"),
        ("csi.storage.k8s.io/pvc/namespace", "web"),
    ]);
    let v = created(&csi, req.clone());
    // Placed by free space: a2 has the larger filesystem.
    assert_eq!(placed_on(&v), "a2");
    assert_eq!(v.capacity_bytes, 64 * MIB);
    assert_eq!(v.volume_context["protocol"], "iscsi");
    assert_eq!(v.volume_context["fsType"], "ext4");
    let d = &csi.appliance("a2").rig.d;
    let share = d.ok("share.show", vec![("share", t(&share_id(&v)))]);
    assert_eq!(field(&share, "name"), "pvc-0001");
    let meta = sub(&share, "metadata");
    assert_eq!(field(meta, "csi.name"), "pvc-0001");
    assert_eq!(field(meta, "csi.pvc.name"), "data");
    assert_eq!(field(meta, "csi.pvc.namespace"), "web");
    assert_eq!(field(&share, "layout"), "block");
    // The same request again: the same volume.
    assert_eq!(created(&csi, req.clone()).volume_id, v.volume_id);
    // A range the existing size fits is the same request too.
    let mut fits = req.clone();
    fits.capacity_range = range(MIB, 64 * MIB);
    assert_eq!(created(&csi, fits).volume_id, v.volume_id);
    // Other parameters: ALREADY_EXISTS, whatever differs.
    let mut bigger = req.clone();
    bigger.capacity_range = range(128 * MIB, 0);
    assert!(refused(&csi, bigger, Code::AlreadyExists).contains("size"));
    let mut nfs = req.clone();
    nfs.parameters = params(&[("protocol", "nfs")]);
    assert!(refused(&csi, nfs, Code::AlreadyExists).contains("protocol"));
    let mut xfs = req.clone();
    xfs.volume_capabilities = vec![mount(Mode::SingleNodeWriter, "xfs")];
    assert!(refused(&csi, xfs, Code::AlreadyExists).contains("fsType"));
    let mut elsewhere = req.clone();
    elsewhere.accessibility_requirements = topology(&["a1"], &[]);
    assert!(refused(&csi, elsewhere, Code::AlreadyExists).contains("topology"));
    let mut multi = req.clone();
    multi.volume_capabilities = vec![block(Mode::MultiNodeMultiWriter)];
    refused(&csi, multi, Code::AlreadyExists);
    // Nothing was made on a1 by any of this.
    let a1 = csi.appliance("a1").rig.d.ok("share.list", vec![]);
    assert_eq!(a1, Value::Array(vec![]));

    // A name shelf would refuse is hashed into a share name; the CSI name is metadata.
    let odd = created(&csi, request("Volume with spaces / and more", 0));
    assert_eq!(odd.capacity_bytes, 1 << 30, "default size");
    let share = d.ok("share.show", vec![("share", t(&share_id(&odd)))]);
    assert!(field(&share, "name").starts_with("csi."));
    assert_eq!(
        field(sub(&share, "metadata"), "csi.name"),
        "Volume with spaces / and more"
    );
}

#[test]
fn sizes_parameters_and_capabilities_are_checked() {
    let csi = Csi::controller("checks", &[2 * GIB]);
    // Sizes round up to 512 bytes; a range no such size fits is OUT_OF_RANGE.
    let v = created(&csi, request("odd-size", 1000));
    assert_eq!(v.capacity_bytes, 1024);
    let mut r = request("limit-only", 0);
    r.capacity_range = range(0, 8 * MIB);
    assert_eq!(created(&csi, r).capacity_bytes, 8 * MIB);
    for (required, limit) in [(2048, 1024), (1000, 1020), (1 << 51, 0)] {
        let mut r = request("bad-range", required);
        r.capacity_range = range(required, limit);
        refused(&csi, r, Code::OutOfRange);
    }
    // NFS volumes are formatted shares of at least XFS's 300 MiB.
    let mut r = request("too-small-nfs", MIB);
    r.capacity_range = range(MIB, 100 * MIB);
    r.parameters = params(&[("protocol", "nfs")]);
    refused(&csi, r, Code::OutOfRange);
    let invalid = [
        (request("", MIB), "name"),
        (
            {
                let mut r = request("no-caps", MIB);
                r.volume_capabilities.clear();
                r
            },
            "volume_capabilities",
        ),
        (
            {
                let mut r = request("colour", MIB);
                r.parameters = params(&[("colour", "red")]);
                r
            },
            "colour",
        ),
        (
            {
                let mut r = request("nfs-block", MIB);
                r.parameters = params(&[("protocol", "nfs")]);
                r.volume_capabilities = vec![block(Mode::SingleNodeWriter)];
                r
            },
            "mount only",
        ),
        (
            {
                let mut r = request("rwx-ext4", MIB);
                r.volume_capabilities = vec![mount(Mode::MultiNodeMultiWriter, "ext4")];
                r
            },
            "several nodes",
        ),
        (
            {
                let mut r = request("btrfs", MIB);
                r.volume_capabilities = vec![mount(Mode::SingleNodeWriter, "btrfs")];
                r
            },
            "btrfs",
        ),
        (
            {
                let mut r = request("fc", MIB);
                r.parameters = params(&[("protocol", "fc")]);
                r
            },
            "protocol",
        ),
    ];
    for (req, word) in invalid {
        let m = refused(&csi, req, Code::InvalidArgument);
        assert!(m.contains(word), "{word}: {m}");
    }
    // A preallocated volume bigger than the appliance's filesystem: shelf's no_space.
    let mut r = request("too-big", 3 * (1 << 30));
    r.parameters = params(&[("sparse", "false")]);
    refused(&csi, r, Code::ResourceExhausted);
    let d = &csi.appliance("a1").rig.d;
    d.err(
        "share.show",
        vec![("share", t("too-big")), ("pool", t("default"))],
        "not_found",
    );
    // Unknown pool: nowhere to place it.
    let mut r = request("no-pool", MIB);
    r.parameters = params(&[("pool", "nope")]);
    refused(&csi, r, Code::InvalidArgument);
}

#[test]
fn protocols_give_their_kind_of_share_and_context() {
    let csi = Csi::controller("protocols", &[4 * GIB]);
    let d = &csi.appliance("a1").rig.d;
    let mut r = request("nfs-vol", 0);
    r.parameters = params(&[("protocol", "nfs"), ("layout", "filesystem")]);
    r.volume_capabilities = vec![mount(Mode::MultiNodeMultiWriter, "")];
    let nfs = created(&csi, r);
    assert_eq!(nfs.volume_context["protocol"], "nfs");
    assert!(!nfs.volume_context.contains_key("fsType"));
    let share = d.ok("share.show", vec![("share", t(&share_id(&nfs)))]);
    assert_eq!(field(&share, "layout"), "filesystem");
    assert_eq!(field(&share, "filesystem"), "xfs");
    assert_eq!(sub(&share, "multiattach"), &Value::Bool(true));
    let mut r = request("nfs-ext4", 0);
    r.parameters = params(&[("protocol", "nfs"), ("fsType", "ext4")]);
    let share = d.ok(
        "share.show",
        vec![("share", t(&share_id(&created(&csi, r))))],
    );
    assert_eq!(field(&share, "filesystem"), "ext4");
    let mut r = request("nvme-vol", 16 * MIB);
    r.parameters = params(&[("protocol", "nvme")]);
    r.volume_capabilities = vec![block(Mode::SingleNodeWriter)];
    let nvme = created(&csi, r);
    assert_eq!(nvme.volume_context["protocol"], "nvme");
    assert!(!nvme.volume_context.contains_key("fsType"), "block access");
    let share = d.ok("share.show", vec![("share", t(&share_id(&nvme)))]);
    assert_eq!(field(&share, "layout"), "block");
    assert_eq!(sub(&share, "multiattach"), &Value::Bool(false));
    let mut r = request("xfs-vol", 16 * MIB);
    r.parameters = params(&[("csi.storage.k8s.io/fstype", "xfs")]);
    assert_eq!(created(&csi, r).volume_context["fsType"], "xfs");
}

/// Where a volume asked with these topology requirements goes.
fn placed(csi: &Csi, name: &str, requisite: &[&str], preferred: &[&str]) -> String {
    let mut r = request(name, MIB);
    r.accessibility_requirements = topology(requisite, preferred);
    placed_on(&created(csi, r))
}

#[test]
fn topology_chooses_the_appliance() {
    let mut csi = Csi::controller("topology", &[2 * GIB, 6 * GIB]);
    assert_eq!(placed(&csi, "free", &[], &[]), "a2");
    assert_eq!(placed(&csi, "req-a1", &["a1"], &[]), "a1");
    assert_eq!(placed(&csi, "pref-a1", &["a1", "a2"], &["a1"]), "a1");
    assert_eq!(placed(&csi, "pref-only", &[], &["a1"]), "a1");
    assert_eq!(placed(&csi, "pref-a3", &["a1", "a2"], &["a3"]), "a2");
    // The segment is answered only to a request that asked for topology: the provisioner
    // makes it the PV's node affinity, which no worker would match otherwise.
    let mut r = request("free", MIB);
    r.accessibility_requirements = topology(&[], &[]);
    assert!(created(&csi, r).accessible_topology.is_empty());
    let unasked = created(&csi, request("free", MIB));
    assert!(unasked.accessible_topology.is_empty(), "{unasked:?}");
    let mut r = request("req-a1", MIB);
    r.accessibility_requirements = topology(&["a1"], &[]);
    let asked = created(&csi, r);
    assert_eq!(asked.accessible_topology.len(), 1, "{asked:?}");
    assert_eq!(asked.accessible_topology[0].segments[TOPOLOGY_KEY], "a1");
    let mut r = request("nowhere", MIB);
    r.accessibility_requirements = topology(&["a3"], &[]);
    refused(&csi, r, Code::ResourceExhausted);
    // An appliance that is down may hold a volume of that name: no create (nor repeat)
    // is answered until it is back, so a volume is never made twice.
    csi.appliances[1].rig.d.stop();
    for name in ["free", "new-one"] {
        let e = create(&csi, request(name, MIB)).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
}
