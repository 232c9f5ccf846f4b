//! Request builders and checks shared by the controller tests.

use std::collections::HashMap;

use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use bpfman_csi::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use bpfman_csi::v1::{
    CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, Topology, TopologyRequirement, Volume,
    VolumeCapability, VolumeContentSource,
};
use tonic::{Code, Status};

use crate::common::csi::{Csi, TOPOLOGY_KEY};

/// A mebibyte.
pub const MIB: i64 = 1 << 20;

/// A mount capability with `fs` (may be empty).
pub fn mount(mode: Mode, fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

/// A raw block capability.
pub fn block(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

/// A capacity range.
pub fn range(required: i64, limit: i64) -> Option<CapacityRange> {
    Some(CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}

/// Parameters from pairs.
pub fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Topology requirements naming appliances.
pub fn topology(requisite: &[&str], preferred: &[&str]) -> Option<TopologyRequirement> {
    let seg = |n: &&str| Topology {
        segments: HashMap::from([(TOPOLOGY_KEY.to_string(), n.to_string())]),
    };
    Some(TopologyRequirement {
        requisite: requisite.iter().map(seg).collect(),
        preferred: preferred.iter().map(seg).collect(),
    })
}

/// A content source: a snapshot id or a volume id.
pub fn from_snapshot(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: id.into(),
        })),
    })
}

/// A content source naming a volume.
pub fn from_volume(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(SourceType::Volume(VolumeSource {
            volume_id: id.into(),
        })),
    })
}

/// A single-node-writer ext4 mount request for `name` of `required` bytes.
pub fn request(name: &str, required: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: range(required, 0),
        volume_capabilities: vec![mount(Mode::SingleNodeWriter, "")],
        ..Default::default()
    }
}

/// CreateVolume.
pub fn create(csi: &Csi, req: CreateVolumeRequest) -> Result<Volume, Status> {
    let mut c = csi.controller.clone();
    csi.block_on(c.create_volume(req))
        .map(|r| r.into_inner().volume.expect("a volume"))
}

/// CreateVolume that must succeed.
pub fn created(csi: &Csi, req: CreateVolumeRequest) -> Volume {
    let name = req.name.clone();
    create(csi, req).unwrap_or_else(|e| panic!("CreateVolume {name}: {e:?}"))
}

/// CreateVolume that must fail with `code`; the message.
pub fn refused(csi: &Csi, req: CreateVolumeRequest, code: Code) -> String {
    let what = format!("{req:?}");
    match create(csi, req) {
        Ok(v) => panic!("CreateVolume succeeded ({v:?}) but {code:?} was expected: {what}"),
        Err(e) => {
            assert_eq!(e.code(), code, "{}: {what}", e.message());
            e.message().to_string()
        }
    }
}

/// DeleteVolume.
pub fn delete(csi: &Csi, id: &str) -> Result<(), Status> {
    let mut c = csi.controller.clone();
    csi.block_on(c.delete_volume(DeleteVolumeRequest {
        volume_id: id.into(),
        secrets: Default::default(),
    }))
    .map(|_| ())
}

/// The appliance a volume was placed on (from its id; its accessible topology, present
/// only when the request had requirements, must agree).
pub fn placed_on(v: &Volume) -> String {
    let on = v.volume_id.split_once(':').unwrap().0.to_string();
    for t in &v.accessible_topology {
        assert_eq!(t.segments[TOPOLOGY_KEY], on, "{v:?}");
    }
    on
}

/// The shelf share id of a volume.
pub fn share_id(v: &Volume) -> String {
    v.volume_id.split_once(':').unwrap().1.to_string()
}
