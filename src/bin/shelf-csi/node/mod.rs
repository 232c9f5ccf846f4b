//! The Node service: stages and publishes volumes on the machine it runs on. This file
//! routes each RPC to the module of its concern and holds what they share ([`NodeCtx`]):
//!
//! - info.rs: NodeGetInfo (the node id of nodeid.rs), NodeGetCapabilities;
//! - stage.rs: NodeStage/UnstageVolume, over attach.rs (iscsi.rs, nvme.rs; NFS needs no
//!   attach), format.rs (blkid, mkfs only on a blank device) and state.rs (what was
//!   staged, on disk);
//! - publish.rs: NodePublish/UnpublishVolume (bind mounts);
//! - expand.rs, stats.rs: NodeExpandVolume, NodeGetVolumeStats;
//! - request.rs: the checks on every request; mounts.rs: mountinfo and mount/umount;
//!   tools.rs: the programs, resolved at start, and the one runner.

mod attach;
mod checked;
mod expand;
mod format;
mod info;
mod iscsi;
mod mounts;
mod nvme;
mod publish;
mod request;
mod stage;
mod state;
mod stats;
mod tools;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bpfman_csi::v1::node_server::Node;
use bpfman_csi::v1::{
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
    NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse,
    NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
    NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
    NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
    NodeUnstageVolumeResponse,
};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::nodeid::NodeId;

/// What every Node RPC shares.
#[derive(Debug)]
pub struct NodeCtx {
    /// The plugin's config.
    cfg: Arc<Config>,
    /// The programs and the runner.
    tools: tools::Tools,
    /// The staged-volume records.
    state: state::StateDir,
    /// This node's id, as built at start.
    node_id: NodeId,
    /// Its text form (NodeGetInfo's answer; the associated data of sealed CHAP secrets).
    encoded_id: String,
    /// Volumes with an RPC in progress.
    busy: Mutex<HashSet<String>>,
}

/// A volume's claim on [`NodeCtx::busy`], released on drop.
#[derive(Debug)]
struct Busy<'a> {
    ctx: &'a NodeCtx,
    volume_id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.ctx.busy.lock() {
            set.remove(&self.volume_id);
        }
    }
}

impl NodeCtx {
    /// [`state::StateDir::load`], off the runtime.
    async fn load_staged(&self, volume_id: &str) -> Result<Option<state::Staged>, Status> {
        let (st, id) = (self.state.clone(), volume_id.to_string());
        tools::offload("reading the stage record", move || st.load(&id)).await
    }

    /// [`state::StateDir::all`], off the runtime.
    async fn all_staged(&self) -> Result<Vec<state::Staged>, Status> {
        let st = self.state.clone();
        tools::offload("reading the stage records", move || st.all()).await
    }

    /// [`state::StateDir::save`] (it fsyncs), off the runtime.
    async fn save_staged(&self, staged: &state::Staged) -> Result<(), Status> {
        let (st, s) = (self.state.clone(), staged.clone());
        tools::offload("writing the stage record", move || st.save(&s)).await
    }

    /// [`state::StateDir::remove`], off the runtime.
    async fn remove_staged(&self, volume_id: &str) -> Result<(), Status> {
        let (st, id) = (self.state.clone(), volume_id.to_string());
        tools::offload("removing the stage record", move || st.remove(&id)).await
    }

    /// [`state::StateDir::load_loop`], off the runtime.
    async fn load_loop(
        &self,
        target: &std::path::Path,
    ) -> Result<Option<state::ReadOnlyLoop>, Status> {
        let (st, t) = (self.state.clone(), target.to_path_buf());
        tools::offload("reading the loop record", move || st.load_loop(&t)).await
    }

    /// [`state::StateDir::save_loop`], off the runtime.
    async fn save_loop(&self, l: &state::ReadOnlyLoop) -> Result<(), Status> {
        let (st, l) = (self.state.clone(), l.clone());
        tools::offload("writing the loop record", move || st.save_loop(&l)).await
    }

    /// [`state::StateDir::remove_loop`], off the runtime.
    async fn remove_loop(&self, target: &std::path::Path) -> Result<(), Status> {
        let (st, t) = (self.state.clone(), target.to_path_buf());
        tools::offload("removing the loop record", move || st.remove_loop(&t)).await
    }

    /// A CO path field: [`request::path`], then beneath `node.kubelet_dir` without links
    /// ([`request::beneath`]).
    fn co_path(&self, field: &str, value: &str) -> Result<std::path::PathBuf, Status> {
        let p = request::path(field, value)?;
        self.beneath(field, &p)?;
        Ok(p)
    }

    /// [`NodeCtx::co_path`] for an RPC that only looks a volume up by its path
    /// (NodeGetVolumeStats, NodeExpandVolume): a given path that is relative, outside the
    /// kubelet directory or through a link names no volume of this node, so NOT_FOUND
    /// (the CSI code for "volume_path not found"); a missing one stays INVALID_ARGUMENT.
    fn lookup_path(&self, field: &str, value: &str) -> Result<std::path::PathBuf, Status> {
        if value.is_empty() {
            return request::path(field, value);
        }
        self.co_path(field, value).map_err(|e| {
            if e.code() == tonic::Code::InvalidArgument {
                Status::not_found(format!(
                    "{field} names no volume of this node: {}",
                    e.message()
                ))
            } else {
                e
            }
        })
    }

    /// [`request::beneath`] the configured kubelet directory.
    fn beneath(&self, field: &str, path: &std::path::Path) -> Result<(), Status> {
        request::beneath(&self.cfg.node.kubelet_dir(), field, path)
    }

    /// Claim `volume_id` for one RPC; ABORTED while another RPC on it runs (CSI: "an
    /// operation is pending for the volume"; the CO retries).
    fn begin(&self, volume_id: &str) -> Result<Busy<'_>, Status> {
        let mut set = self
            .busy
            .lock()
            .map_err(|_| Status::internal("the node's volume table is poisoned"))?;
        if !set.insert(volume_id.to_string()) {
            return Err(Status::aborted(format!(
                "an operation on volume {volume_id} is in progress"
            )));
        }
        Ok(Busy {
            ctx: self,
            volume_id: volume_id.to_string(),
        })
    }
}

/// The Node service.
#[derive(Debug)]
pub struct NodeService {
    ctx: Arc<NodeCtx>,
}

impl NodeService {
    /// The service for `cfg`: builds the node id (reading the initiator files), resolves
    /// the programs and logs both. An unusable node id is an error: the plugin stops.
    pub fn new(cfg: Arc<Config>) -> Result<NodeService, String> {
        let node_id = info::node_id(&cfg.node)?;
        let encoded_id = node_id.encode()?;
        log::info!("node id {encoded_id}");
        let state = state::StateDir::new(&cfg.node.state_dir());
        Ok(NodeService {
            ctx: Arc::new(NodeCtx {
                tools: tools::Tools::at_start(),
                state,
                node_id,
                encoded_id,
                busy: Mutex::new(HashSet::new()),
                cfg,
            }),
        })
    }
}

/// Log a failed RPC (the CO sees the status; the node's log keeps the story).
fn logged<T>(rpc: &str, r: Result<T, Status>) -> Result<Response<T>, Status> {
    if let Err(e) = &r {
        log::warn!("{rpc}: {:?}: {}", e.code(), e.message());
    }
    r.map(Response::new)
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        req: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = stage::stage(&self.ctx, req.into_inner()).await;
        logged("NodeStageVolume", r.map(|()| NodeStageVolumeResponse {}))
    }
    async fn node_unstage_volume(
        &self,
        req: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = stage::unstage(&self.ctx, req.into_inner()).await;
        logged(
            "NodeUnstageVolume",
            r.map(|()| NodeUnstageVolumeResponse {}),
        )
    }
    async fn node_publish_volume(
        &self,
        req: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = publish::publish(&self.ctx, req.into_inner()).await;
        logged(
            "NodePublishVolume",
            r.map(|()| NodePublishVolumeResponse {}),
        )
    }
    async fn node_unpublish_volume(
        &self,
        req: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = publish::unpublish(&self.ctx, req.into_inner()).await;
        logged(
            "NodeUnpublishVolume",
            r.map(|()| NodeUnpublishVolumeResponse {}),
        )
    }
    async fn node_get_volume_stats(
        &self,
        req: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        logged(
            "NodeGetVolumeStats",
            stats::stats(&self.ctx, req.into_inner()).await,
        )
    }
    async fn node_expand_volume(
        &self,
        req: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        logged(
            "NodeExpandVolume",
            expand::expand(&self.ctx, req.into_inner()).await,
        )
    }
    async fn node_get_capabilities(
        &self,
        _req: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(info::capabilities()))
    }
    async fn node_get_info(
        &self,
        _req: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(info::info(
            &self.ctx.cfg.node,
            &self.ctx.encoded_id,
        )))
    }
}
