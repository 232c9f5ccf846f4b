//! The CSI Identity and Controller services over their real gRPC socket: the real
//! `shelf-csi` binary against real shelfd appliances (tests/common/csi.rs).

mod common;

use bpfman_csi::v1::plugin_capability::{self, service};
use bpfman_csi::v1::{GetPluginCapabilitiesRequest, GetPluginInfoRequest, ProbeRequest};
use common::csi::{Csi, DRIVER};

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
    // An appliance that is down makes the probe fail (UNAVAILABLE), not lie.
    csi.appliances[1].rig.d.stop();
    let err = csi.block_on(id.probe(ProbeRequest {})).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("a2"), "{}", err.message());
    assert!(csi.is_running());
}
