//! The container orchestrator's side of CSI, as kubelet and the external-attacher drive a
//! plugin: tonic clients of the three services over the plugin's unix socket, and one
//! volume's life cycle (create, controller publish, stage, publish and back) with the paths
//! and secrets Kubernetes would pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bpfman_csi::v1::controller_client::ControllerClient;
use bpfman_csi::v1::identity_client::IdentityClient;
use bpfman_csi::v1::node_client::NodeClient;
use bpfman_csi::v1::volume_capability::MountVolume;
use bpfman_csi::v1::volume_capability::{access_mode, AccessMode, AccessType, BlockVolume};
use bpfman_csi::v1::{
    CapacityRange, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, DeleteVolumeRequest, NodePublishVolumeRequest, NodeStageVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, VolumeCapability,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// The key of the CHAP sealing secret in the `secrets` maps (seal.rs's constant).
pub const CHAP_KEY: &str = "chapKey";
/// The value of the Kubernetes Secret both the attacher and kubelet would be given.
pub const CHAP_SEALING_SECRET: &str = "dm0tdGllci1jaGFwLXNlYWxpbmcta2V5LTIwMjYtMTI";
/// Another key: what a node given the wrong Secret would hold.
pub const WRONG_SEALING_SECRET: &str = "bm90LXRoZS1zYW1lLXNlY3JldC1hdC1hbGwtMjAyNg";

/// A gRPC status as one line: its code and message.
pub fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The three services' clients over one connection.
#[derive(Debug, Clone)]
pub struct Co {
    /// Identity.
    pub identity: IdentityClient<Channel>,
    /// Controller.
    pub controller: ControllerClient<Channel>,
    /// Node.
    pub node: NodeClient<Channel>,
}

impl Co {
    /// Connect to the plugin's unix socket (the URI is a placeholder tonic needs).
    pub async fn connect(socket: &Path) -> Result<Co, String> {
        let path = socket.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:50051")
            .map_err(|e| e.to_string())?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                tokio::net::UnixStream::connect(path.clone())
            }))
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        Ok(Co {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
        })
    }
}

/// A `secrets` map holding the sealing key `value`.
pub fn secrets(value: &str) -> HashMap<String, String> {
    HashMap::from([(CHAP_KEY.to_string(), value.to_string())])
}

/// A single-node-writer capability: a filesystem of `fs_type`, or the raw block device.
pub fn capability(fs_type: Option<&str>) -> VolumeCapability {
    let access_type = match fs_type {
        Some(fs) => AccessType::Mount(MountVolume {
            fs_type: fs.to_string(),
            ..Default::default()
        }),
        None => AccessType::Block(BlockVolume {}),
    };
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(access_type),
    }
}

/// One volume as the CO tracks it through its life.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The CSI volume id (`vm1:<shelf share id>`).
    pub id: String,
    /// CreateVolume's volume_context, passed to stage and publish.
    pub context: HashMap<String, String>,
    /// The capability it is used with.
    pub capability: VolumeCapability,
    /// ControllerPublish's publish_context.
    pub publish_context: HashMap<String, String>,
    /// The staging path (kubelet's globalmount, or volumeDevices/staging for block).
    pub staging: PathBuf,
    /// The target path (the pod's mount directory, or a device file for block).
    pub target: PathBuf,
}

impl Volume {
    /// The shelf share id: the part of the volume id after the appliance name.
    pub fn share_id(&self) -> &str {
        self.id.split_once(':').map_or("", |(_, s)| s)
    }
}

/// Kubernetes' paths for a volume called `name`; the staging directory and the target's
/// parent are made here, as kubelet makes them (the plugin makes the target itself).
fn paths(name: &str, block: bool) -> Result<(PathBuf, PathBuf), String> {
    let root = Path::new("/var/lib/kubelet");
    let (staging, target) = if block {
        let dev = root.join("plugins/kubernetes.io/csi/volumeDevices");
        (
            dev.join("staging").join(name),
            dev.join("publish").join(name).join("pod-0001"),
        )
    } else {
        (
            root.join("plugins/kubernetes.io/csi/csi.shelf.io")
                .join(name)
                .join("globalmount"),
            root.join("pods/pod-0001/volumes/kubernetes.io~csi")
                .join(name)
                .join("mount"),
        )
    };
    for d in [&staging, &target.parent().unwrap_or(root).to_path_buf()] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    Ok((staging, target))
}

impl Co {
    /// CreateVolume `name` of `bytes` with the StorageClass `parameters`.
    pub async fn create(
        &mut self,
        name: &str,
        bytes: i64,
        fs_type: Option<&str>,
        parameters: &[(&str, &str)],
    ) -> Result<Volume, String> {
        let capability = capability(fs_type);
        let resp = self
            .controller
            .create_volume(CreateVolumeRequest {
                name: name.to_string(),
                capacity_range: Some(CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![capability.clone()],
                parameters: parameters
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await
            .map_err(status)?
            .into_inner();
        let v = resp.volume.ok_or("CreateVolume answered no volume")?;
        let (staging, target) = paths(name, fs_type.is_none())?;
        Ok(Volume {
            id: v.volume_id,
            context: v.volume_context,
            capability,
            publish_context: HashMap::new(),
            staging,
            target,
        })
    }

    /// ControllerPublishVolume to `node_id` with the sealing secret; keeps the context.
    pub async fn controller_publish(
        &mut self,
        v: &mut Volume,
        node_id: &str,
    ) -> Result<(), String> {
        let resp = self
            .controller
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: v.id.clone(),
                node_id: node_id.to_string(),
                volume_capability: Some(v.capability.clone()),
                readonly: false,
                secrets: secrets(CHAP_SEALING_SECRET),
                volume_context: v.context.clone(),
            })
            .await
            .map_err(status)?;
        v.publish_context = resp.into_inner().publish_context;
        Ok(())
    }

    /// NodeStageVolume with the sealing secret `key`.
    pub async fn stage(&mut self, v: &Volume, key: &str) -> Result<(), String> {
        self.node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: v.id.clone(),
                publish_context: v.publish_context.clone(),
                staging_target_path: v.staging.display().to_string(),
                volume_capability: Some(v.capability.clone()),
                secrets: secrets(key),
                volume_context: v.context.clone(),
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// NodePublishVolume read-write at the volume's target path.
    pub async fn publish(&mut self, v: &Volume) -> Result<(), String> {
        self.node
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: v.id.clone(),
                publish_context: v.publish_context.clone(),
                staging_target_path: v.staging.display().to_string(),
                target_path: v.target.display().to_string(),
                volume_capability: Some(v.capability.clone()),
                readonly: false,
                secrets: HashMap::new(),
                volume_context: v.context.clone(),
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// NodeUnpublishVolume.
    pub async fn unpublish(&mut self, v: &Volume) -> Result<(), String> {
        self.node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                target_path: v.target.display().to_string(),
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// NodeUnstageVolume.
    pub async fn unstage(&mut self, v: &Volume) -> Result<(), String> {
        self.node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: v.id.clone(),
                staging_target_path: v.staging.display().to_string(),
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// ControllerUnpublishVolume from `node_id`.
    pub async fn controller_unpublish(&mut self, v: &Volume, node_id: &str) -> Result<(), String> {
        self.controller
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                node_id: node_id.to_string(),
                secrets: secrets(CHAP_SEALING_SECRET),
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// DeleteVolume.
    pub async fn delete(&mut self, v: &Volume) -> Result<(), String> {
        self.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: v.id.clone(),
                secrets: HashMap::new(),
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// Everything back, best effort, in kubelet's and the attacher's order: what a failed
    /// check left behind must not disturb the next flow.
    pub async fn tear_down(&mut self, v: &Volume, node_id: &str) {
        let steps = [
            self.unpublish(v).await,
            self.unstage(v).await,
            self.controller_unpublish(v, node_id).await,
            self.delete(v).await,
        ];
        for (what, r) in ["unpublish", "unstage", "controller unpublish", "delete"]
            .iter()
            .zip(steps)
        {
            if let Err(e) = r {
                println!("note: tear-down of {}: {what}: {e}", v.id);
            }
        }
    }
}
