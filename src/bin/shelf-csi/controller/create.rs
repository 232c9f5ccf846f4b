//! CreateVolume: one CSI volume is one shelf share, named after the CSI name
//! ([`shelf_name`]) with the CSI name itself in its metadata (`csi.name`), so a repeat is
//! found on whichever appliance the first call placed it. A repeat with the same
//! parameters answers the existing volume; with others ALREADY_EXISTS. A second call for a
//! name whose first call is still running is ABORTED (CSI: "operation pending").

use std::collections::BTreeMap;

use bpfman_csi::v1::volume_content_source::Type as SourceType;
use bpfman_csi::v1::{CreateVolumeRequest, CreateVolumeResponse, Volume, VolumeContentSource};
use shelf::model::{Layout, Share, ShareState, SECTOR};
use shelf::proto::{Request, ShareCreateArgs, ShareListArgs};
use tonic::{Code, Status};

use super::clone;
use super::params::{self, Needs, Params, Protocol};
use super::placement;
pub use super::view::{decode_share, volume, volume_of};
use super::ControllerService;
use crate::appliance::Appliance;
use crate::ids::Id;
use crate::objects::{self, META_NAME, META_PROTOCOL};

/// Share metadata: the node's filesystem of an iSCSI/NVMe mount volume.
pub const META_FSTYPE: &str = "csi.fstype";
/// Share metadata: the content source, `snapshot:<id>` or `volume:<id>`.
pub const META_SOURCE: &str = "csi.source";

/// The shelf share name of a CSI volume name (the snapshots' rule: the name itself when
/// shelf accepts it, else `csi.` and a hash).
pub use super::snapshots::shelf_name;

/// What the request asks for, checked. Its `Debug` leaves the request's secrets out.
#[derive(Clone)]
pub struct Wanted {
    /// The request.
    pub req: CreateVolumeRequest,
    /// Its parameters.
    pub params: Params,
    /// What its capabilities need.
    pub needs: Needs,
    /// The share's name.
    pub share_name: String,
    /// The share's metadata.
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut req = self.req.clone();
        let secrets: Vec<String> = req.secrets.drain().map(|(k, _)| k).collect();
        f.debug_struct("Wanted")
            .field("req", &req)
            .field(
                "secrets",
                &format_args!("<{} redacted>", secrets.join(", ")),
            )
            .field("params", &self.params)
            .field("needs", &self.needs)
            .field("share_name", &self.share_name)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl Wanted {
    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.params.protocol()
    }
    /// The smallest size shelf makes for the protocol (a formatted share's filesystem).
    pub fn min_size(&self) -> u64 {
        match self.protocol() {
            Protocol::Nfs => self.nfs_fs().min_size(),
            _ => SECTOR,
        }
    }
    /// shelfd's filesystem of an NFS volume (XFS by default).
    pub fn nfs_fs(&self) -> shelf::model::FsKind {
        let fs = self.needs.fs_type.as_deref().and_then(params::shelf_fs);
        fs.unwrap_or(shelf::model::FsKind::Xfs)
    }
}

/// `CreateVolume`: see the module comment.
pub async fn create_volume(
    svc: &ControllerService,
    req: CreateVolumeRequest,
) -> Result<CreateVolumeResponse, Status> {
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    let params = Params::parse(&req.parameters)?;
    let mut needs = params::check_capabilities(
        &req.volume_capabilities,
        params.protocol(),
        params.fs_type.as_deref(),
    )
    .map_err(Status::invalid_argument)?;
    if params.protocol() != Protocol::Nfs
        && needs.fs_type.is_none()
        && params::wants_mount(&req.volume_capabilities)
    {
        needs.fs_type = Some("ext4".into());
    }
    let _claim = svc.pending.claim(&req.name)?;
    let wanted = Wanted {
        share_name: shelf_name(&req.name),
        metadata: metadata(&req, &params, &needs)?,
        req,
        params,
        needs,
    };
    if let Some((a, share)) = existing(svc, &wanted).await? {
        let v = match repeat(&a, &share, &wanted)? {
            Repeat::Same(v) => v,
            Repeat::Grow(size) => {
                let share = clone::grow(&a, &share, size).await?;
                log::info!(
                    "CreateVolume {:?}: clone {} grown to {size} bytes on a retry",
                    wanted.req.name,
                    share.id
                );
                volume(&a, &share, &wanted.req)
            }
        };
        if let Some((false, source)) = source(wanted.req.volume_content_source.as_ref())? {
            clone::forget_transient(svc, &wanted.req.name, &source).await;
        }
        return Ok(response(v));
    }
    let (a, share) = match source(wanted.req.volume_content_source.as_ref())? {
        None => create_new(svc, &wanted).await?,
        Some(source) => clone::create_from(svc, &wanted, source).await?,
    };
    log::info!(
        "CreateVolume {:?}: share {} ({} bytes) on {}",
        wanted.req.name,
        share.id,
        share.size,
        a.name
    );
    Ok(response(volume(&a, &share, &wanted.req)))
}

/// The content source as an id: `(true, id)` for a snapshot, `(false, id)` for a volume.
/// A malformed id names nothing: NOT_FOUND.
fn source(s: Option<&VolumeContentSource>) -> Result<Option<(bool, Id)>, Status> {
    match s.and_then(|s| s.r#type.as_ref()) {
        None => Ok(None),
        Some(SourceType::Snapshot(s)) => {
            Ok(Some((true, Id::parse("snapshot_id", &s.snapshot_id)?)))
        }
        Some(SourceType::Volume(v)) => Ok(Some((false, Id::parse("volume_id", &v.volume_id)?))),
    }
}

/// The share's metadata: the CSI name, protocol, node filesystem, source and the
/// sidecars' PVC/PV names.
fn metadata(
    req: &CreateVolumeRequest,
    params: &Params,
    needs: &Needs,
) -> Result<BTreeMap<String, String>, Status> {
    let mut m = BTreeMap::from([
        (META_NAME.to_string(), req.name.clone()),
        (
            META_PROTOCOL.to_string(),
            params.protocol().as_str().to_string(),
        ),
    ]);
    if let (Some(fs), true) = (&needs.fs_type, params.protocol() != Protocol::Nfs) {
        m.insert(META_FSTYPE.into(), fs.clone());
    }
    match source(req.volume_content_source.as_ref())? {
        Some((true, id)) => m.insert(META_SOURCE.into(), format!("snapshot:{id}")),
        Some((false, id)) => m.insert(META_SOURCE.into(), format!("volume:{id}")),
        None => None,
    };
    for (k, v) in &params.k8s {
        m.insert(k.to_string(), v.clone());
    }
    Ok(m)
}

/// The share an earlier call made for this CSI name, on any appliance. Every appliance
/// must answer: one that cannot be reached may hold it (UNAVAILABLE, the CO retries).
async fn existing(
    svc: &ControllerService,
    w: &Wanted,
) -> Result<Option<(Appliance, Share)>, Status> {
    for a in objects::appliances(&svc.cfg) {
        let req = Request::ShareList(ShareListArgs {
            name: Some(w.share_name.clone()),
            ..ShareListArgs::default()
        });
        let shares: Vec<Share> = objects::decode(&a, a.call(req).await?)?;
        let mine = shares
            .into_iter()
            .find(|s| s.metadata.get(META_NAME) == Some(&w.req.name));
        if let Some(s) = mine {
            return Ok(Some((a, s)));
        }
    }
    Ok(None)
}

/// What a repeat of a CreateVolume does with the share an earlier call made.
#[derive(Debug)]
enum Repeat {
    /// It is what the request asks for: answer it.
    Same(Volume),
    /// A clone made at its source's size whose `share.resize` failed: grow it to this size.
    Grow(u64),
}

/// The answer to a repeat: the existing volume when it is what `w` asks for, else
/// ALREADY_EXISTS naming the difference (ABORTED while it is being made or deleted). A
/// clone smaller than required, from the same source and within the limit, is one whose
/// grow failed: [`Repeat::Grow`] finishes it.
fn repeat(a: &Appliance, share: &Share, w: &Wanted) -> Result<Repeat, Status> {
    match share.state {
        ShareState::Available => {}
        ShareState::Creating | ShareState::Deleting => {
            return Err(Status::aborted(format!(
                "volume {:?} is {:?} on {}",
                w.req.name, share.state, a.name
            )))
        }
        ShareState::Error => {
            return Err(Status::internal(format!(
                "volume {:?} is in error",
                w.req.name
            )))
        }
    }
    let differs = |what: &str| {
        Status::already_exists(format!(
            "volume {:?} exists ({}:{}) with another {what}",
            w.req.name, a.name, share.id
        ))
    };
    let meta = |k: &str| share.metadata.get(k).map(String::as_str);
    if meta(META_PROTOCOL) != Some(w.protocol().as_str()) {
        return Err(differs("protocol"));
    }
    if meta(META_SOURCE) != w.metadata.get(META_SOURCE).map(String::as_str) {
        return Err(differs("content source"));
    }
    let fs_differs = match w.protocol() {
        Protocol::Nfs => w.needs.fs_type.is_some() && share.filesystem != Some(w.nfs_fs()),
        _ => w.needs.fs_type.is_some() && meta(META_FSTYPE) != w.needs.fs_type.as_deref(),
    };
    if fs_differs {
        return Err(differs("fsType"));
    }
    if w.params.pool.as_ref().is_some_and(|p| *p != share.pool) {
        return Err(differs("pool"));
    }
    if w.params.sparse.is_some_and(|s| s != share.sparse) {
        return Err(differs("sparse"));
    }
    if w.needs.multiattach && !share.multiattach {
        return Err(differs("access mode (it is single-node)"));
    }
    if !placement::allowed(w.req.accessibility_requirements.as_ref(), &a.name) {
        return Err(differs("topology"));
    }
    let (required, limit) = w.req.capacity_range.as_ref().map_or((0, 0), |r| {
        (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64)
    });
    let within = |size: u64| limit == 0 || size <= limit;
    if share.size < required && within(required) && meta(META_SOURCE).is_some() {
        let size = params::size_for(w.req.capacity_range.as_ref(), required, SECTOR)?;
        return Ok(Repeat::Grow(size));
    }
    if share.size < required || !within(share.size) {
        return Err(differs(&format!("size ({} bytes)", share.size)));
    }
    Ok(Repeat::Same(volume(a, share, &w.req)))
}

/// A new empty share on the best appliance that takes it; the next one is tried when one
/// has no room (RESOURCE_EXHAUSTED) or cannot be reached.
async fn create_new(svc: &ControllerService, w: &Wanted) -> Result<(Appliance, Share), Status> {
    let size = params::size_for(
        w.req.capacity_range.as_ref(),
        params::DEFAULT_SIZE,
        w.min_size(),
    )?;
    let topology = w.req.accessibility_requirements.as_ref();
    let mut last = None;
    for (a, pool) in placement::candidates(&svc.cfg, topology, w.params.pool.as_deref()).await? {
        let nfs = w.protocol() == Protocol::Nfs;
        let req = Request::ShareCreate(ShareCreateArgs {
            name: w.share_name.clone(),
            size,
            pool: Some(pool),
            sparse: w.params.sparse,
            multiattach: w.needs.multiattach,
            metadata: w.metadata.clone(),
            layout: Some(if nfs {
                Layout::Filesystem
            } else {
                Layout::Block
            }),
            filesystem: nfs.then(|| w.nfs_fs()),
            ..ShareCreateArgs::default()
        });
        match a.call(req).await {
            Ok(v) => return Ok((a.clone(), decode_share(&a, &v)?)),
            Err(e) if matches!(e.code(), Code::ResourceExhausted | Code::Unavailable) => {
                log::warn!(
                    "CreateVolume {:?} on {}: {}",
                    w.req.name,
                    a.name,
                    e.message()
                );
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Status::resource_exhausted("no appliance can take the volume")))
}

fn response(v: Volume) -> CreateVolumeResponse {
    CreateVolumeResponse { volume: Some(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_debug_leaves_the_secrets_out() {
        let req = CreateVolumeRequest {
            name: "pvc-1".into(),
            secrets: [("chapKey".to_string(), "hunter2-the-secret".to_string())].into(),
            ..Default::default()
        };
        let w = Wanted {
            share_name: shelf_name(&req.name),
            metadata: BTreeMap::new(),
            params: Params::parse(&Default::default()).unwrap(),
            needs: Needs::default(),
            req,
        };
        let shown = format!("{w:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("pvc-1") && shown.contains("chapKey"),
            "{shown}"
        );
    }
}
