//! The Identity service: who the plugin is, what it offers, and whether it is ready.

use std::sync::Arc;
use std::time::Duration;

use bpfman_csi::v1::identity_server::Identity;
use bpfman_csi::v1::plugin_capability::{self, service, volume_expansion};
use bpfman_csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use crate::appliance::Appliance;
use crate::config::Config;

/// The Identity service.
#[derive(Debug)]
pub struct IdentityService {
    cfg: Arc<Config>,
}

impl IdentityService {
    /// The service for `cfg`.
    pub fn new(cfg: Arc<Config>) -> IdentityService {
        IdentityService { cfg }
    }
}

fn service(t: service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service { r#type: t as i32 },
        )),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _req: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.cfg.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _req: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = vec![];
        if self.cfg.mode.serves_controller() {
            capabilities.push(service(service::Type::ControllerService));
            capabilities.push(service(service::Type::VolumeAccessibilityConstraints));
            // shelf grows a share while it is attached (share.resize); the node grows the
            // filesystem (NodeExpandVolume).
            capabilities.push(PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    },
                )),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    /// Controller: ready when at least one appliance answers `hello` within
    /// [`PROBE_TIMEOUT`] (all are asked at once); `ready: false` when none does. Never an
    /// error for unreachable appliances: the CSI spec keeps an error for a plugin that is
    /// unhealthy and may need a restart (the livenessprobe sidecar restarts it), and a
    /// restart brings no appliance back. A node service is always ready (its programs
    /// were checked at start).
    async fn probe(&self, _req: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let ready = !self.cfg.mode.serves_controller() || any_answers(&self.cfg).await;
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}

/// How long Probe waits for the appliances' `hello`: under the livenessprobe sidecar's
/// default `--probe-timeout` (1 s), so slow appliances cannot make it restart the
/// controller.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether any configured appliance answers `hello` within [`PROBE_TIMEOUT`], asking all
/// at once and answering at the first that does (the others' calls are dropped); those
/// that fail before it are logged.
async fn any_answers(cfg: &Config) -> bool {
    let mut asked = JoinSet::new();
    for a in &cfg.appliances {
        let a = Appliance::new(a);
        asked.spawn(async move {
            let hello = a.call(shelf::proto::Request::Hello);
            let r = match tokio::time::timeout(PROBE_TIMEOUT, hello).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "appliance {}: no answer in {PROBE_TIMEOUT:?}",
                    a.name
                ))),
            };
            (a.name, r)
        });
    }
    while let Some(done) = asked.join_next().await {
        match done {
            Ok((_, Ok(()))) => return true,
            Ok((name, Err(e))) => log::warn!("Probe: appliance {name}: {}", e.message()),
            Err(e) => log::warn!("Probe: {e}"),
        }
    }
    false
}
