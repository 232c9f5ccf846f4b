//! The Identity service: who the plugin is, what it offers, and whether it is ready.

use std::sync::Arc;

use bpfman_csi::v1::identity_server::Identity;
use bpfman_csi::v1::plugin_capability::{self, service, volume_expansion};
use bpfman_csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
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

    /// Ready when every appliance answers `hello` (controller), and always for a node
    /// service (its programs were checked at start).
    async fn probe(&self, _req: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        if self.cfg.mode.serves_controller() {
            for a in &self.cfg.appliances {
                Appliance::new(a).call(shelf::proto::Request::Hello).await?;
            }
        }
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
