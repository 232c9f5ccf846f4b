//! The CO's scenario: Identity and node info, then one volume per flow, each through the
//! life Kubernetes gives it (CreateVolume, ControllerPublish to the node NodeGetInfo named,
//! NodeStage, NodePublish, a pod's writes, and everything back), checked against what the
//! guest's kernel and the appliance show. A flow stops at its first failed step and tears
//! its volume down, so the next flow starts clean.

use std::path::{Path, PathBuf};

use bpfman_csi::v1::node_service_capability::rpc::Type as NodeCap;
use bpfman_csi::v1::plugin_capability::service::Type as PluginService;
use bpfman_csi::v1::{
    node_service_capability, plugin_capability, GetPluginCapabilitiesRequest, GetPluginInfoRequest,
    NodeGetCapabilitiesRequest, NodeGetInfoRequest, ProbeRequest,
};

use super::co::{status, Co, Volume};
use super::others;
use super::report::{ensure, run, Report};

/// The appliance name guest.sh gives the guest's shelfd in the plugin's config.
pub const APPLIANCE: &str = "vm1";
/// The guest's iSCSI initiator name (image/vm/build writes it).
pub const GUEST_IQN: &str = "iqn.2026-11.org.example.shelfvm:initiator";
/// The guest's NVMe host NQN (image/vm/build writes it).
pub const GUEST_NQN: &str = "nqn.2026-11.org.example.shelfvm:host";
/// 1 MiB.
pub const MIB: i64 = 1 << 20;

/// Every flow, in order, on one plugin.
pub async fn run_all(r: &mut Report, mut co: Co) {
    r.section("CSI: identity and node info");
    let Ok(node_id) = identity_and_info(r, &mut co).await else {
        return;
    };
    // Each flow reports its own checks; one that stopped early has torn its volume down.
    let _ = super::iscsi::mount_ext4(r, &mut co, &node_id).await;
    let _ = others::block(r, &mut co, &node_id).await;
    let _ = others::nvme(r, &mut co, &node_id).await;
    let _ = others::nfs(r, &mut co, &node_id).await;
}

/// What a flow answers: `Err` at the first failed check (already reported).
pub type FlowResult = Result<(), String>;

/// GetPluginInfo, Probe, GetPluginCapabilities, NodeGetCapabilities and NodeGetInfo; the
/// node id, which every ControllerPublish below is given as Kubernetes gives it.
async fn identity_and_info(r: &mut Report, co: &mut Co) -> Result<String, String> {
    let info = co.identity.get_plugin_info(GetPluginInfoRequest {}).await;
    r.check(
        "csi-identity-plugin-info",
        info.map_err(status).and_then(|i| {
            let i = i.into_inner();
            ensure(
                i.name == "csi.shelf.io" && !i.vendor_version.is_empty(),
                || format!("name {:?}, version {:?}", i.name, i.vendor_version),
            )
        }),
    )
    .ok();
    let probe = co.identity.probe(ProbeRequest {}).await;
    r.check(
        "csi-identity-probe-ready",
        probe.map_err(status).and_then(|p| {
            let ready = p.into_inner().ready;
            ensure(ready == Some(true), || format!("ready: {ready:?}"))
        }),
    )
    .ok();
    let caps = co
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await;
    r.check(
        "csi-identity-controller-capability",
        caps.map_err(status).and_then(|c| {
            let c = c.into_inner().capabilities;
            let has = c.iter().any(|c| {
                matches!(&c.r#type, Some(plugin_capability::Type::Service(s))
                    if s.r#type == PluginService::ControllerService as i32)
            });
            ensure(has, || format!("no CONTROLLER_SERVICE in {c:?}"))
        }),
    )
    .ok();
    let caps = co
        .node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await;
    r.check(
        "csi-node-capabilities",
        caps.map_err(status).and_then(|c| {
            let got: Vec<i32> = c
                .into_inner()
                .capabilities
                .iter()
                .filter_map(|c| {
                    let node_service_capability::Type::Rpc(rpc) = c.r#type.as_ref()?;
                    Some(rpc.r#type)
                })
                .collect();
            let want = [
                NodeCap::StageUnstageVolume,
                NodeCap::ExpandVolume,
                NodeCap::GetVolumeStats,
            ];
            ensure(want.iter().all(|w| got.contains(&(*w as i32))), || {
                format!("node capabilities {got:?} lack one of {want:?}")
            })
        }),
    )
    .ok();
    let info = co.node.node_get_info(NodeGetInfoRequest {}).await;
    r.check(
        "csi-node-get-info",
        info.map_err(status).and_then(|i| {
            let id = i.into_inner().node_id;
            // Opaque to a CO; here it must carry the guest's initiator names (nodeid.rs), the
            // ones image/vm/build wrote, since ControllerPublish attaches them.
            ensure(
                id.len() <= 256 && id.contains(GUEST_IQN) && id.contains(GUEST_NQN),
                || format!("node id of {} bytes: {id:?}", id.len()),
            )?;
            Ok(id)
        }),
    )
}

/// The path of the LV behind a share of the guest's thin pool (guest.sh's `shelfvg/tp`).
pub fn lv_path(v: &Volume) -> String {
    format!("/dev/shelfvg/shelf-{}", v.share_id())
}

/// CreateVolume, checked: the id names the appliance, and the share's thin LV exists with
/// at least the size asked for.
pub async fn create(
    r: &mut Report,
    co: &mut Co,
    check: &str,
    name: &str,
    bytes: i64,
    fs_type: Option<&str>,
    parameters: &[(&str, &str)],
) -> Result<Volume, String> {
    let v = co.create(name, bytes, fs_type, parameters).await;
    r.check(
        check,
        v.and_then(|v| {
            ensure(v.id.starts_with(&format!("{APPLIANCE}:")), || {
                format!("volume id {:?} does not name the appliance", v.id)
            })?;
            let size = super::report::device_size(&lv_path(&v))?;
            ensure(size >= bytes as u64, || {
                format!("{}: {size} bytes", lv_path(&v))
            })?;
            Ok(v)
        }),
    )
}

/// shelfd's attachments of the share behind `v` (`shelfctl --json attachment list`).
pub fn attachments(v: &Volume) -> Result<Vec<serde_json::Value>, String> {
    let shelfctl = shelfctl();
    let out = run(&[&shelfctl, "--json", "attachment", "list"])?;
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&out).map_err(|e| format!("attachment list: {e}: {out}"))?;
    Ok(all
        .into_iter()
        .filter(|a| a["share"].as_str() == Some(v.share_id()))
        .collect())
}

/// The shelfctl copied beside this binary (guest.sh's `/share/bin`).
fn shelfctl() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .map_or_else(|| PathBuf::from("/share/bin"), Path::to_path_buf);
    dir.join("shelfctl").display().to_string()
}

/// ControllerPublish, checked: shelfd has one attachment of the share, for `client`.
pub async fn controller_publish(
    r: &mut Report,
    co: &mut Co,
    check: &str,
    v: &mut Volume,
    node_id: &str,
    client: &str,
) -> FlowResult {
    let published = co.controller_publish(v, node_id).await;
    r.check(
        check,
        published.and_then(|()| {
            let a = attachments(v)?;
            ensure(
                a.len() == 1 && a[0]["client"].as_str() == Some(client),
                || format!("attachments of {}: {a:?}", v.share_id()),
            )
        }),
    )
}

/// ControllerUnpublish and DeleteVolume, each checked (no attachment left; the LV gone)
/// and each repeated, as a retrying sidecar would (a repeat succeeds).
pub async fn unpublish_and_delete(
    r: &mut Report,
    co: &mut Co,
    prefix: &str,
    v: &Volume,
    node_id: &str,
) -> FlowResult {
    let first = co.controller_unpublish(v, node_id).await;
    let again = co.controller_unpublish(v, node_id).await;
    r.check(
        &format!("{prefix}-controller-unpublish-detaches"),
        first.and(again).and_then(|()| {
            let a = attachments(v)?;
            ensure(a.is_empty(), || format!("attachments left: {a:?}"))
        }),
    )?;
    let first = co.delete(v).await;
    let again = co.delete(v).await;
    r.check(
        &format!("{prefix}-delete-volume"),
        first.and(again).and_then(|()| {
            ensure(!Path::new(&lv_path(v)).exists(), || {
                format!("{} still exists", lv_path(v))
            })
        }),
    )
}

/// Write `text` to `path` and push it to the device (a pod's write, then sync).
pub fn write_synced(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// The contents of `path`, or an error naming it.
pub fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}
