//! The other flows: an iSCSI volume in raw block mode (the device at the target path, no
//! mkfs), an NVMe/TCP volume with ext4 (nvmet in the guest, nvme-cli's connect), and an
//! NFS volume (a shelf `layout: filesystem` share exported by the kernel's nfsd).

use std::path::Path;
use std::process::Command;

use super::co::{Co, Volume, CHAP_SEALING_SECRET};
use super::flows::{self, lv_path, FlowResult, GUEST_IQN, GUEST_NQN, MIB};
use super::iscsi::publish_and_check;
use super::report::{
    ensure, is_block_device, iscsi_sessions, mount_source, mounted_fs, nvme_subsystems, run,
    wait_until, Report,
};

/// Run a flow's steps on a volume, tearing it down when they stopped early.
macro_rules! torn_down_on_failure {
    ($co:expr, $v:expr, $node_id:expr, $steps:expr) => {{
        let result = $steps;
        if result.is_err() {
            $co.tear_down(&$v, $node_id).await;
        }
        result
    }};
}

/// The raw block flow (iSCSI).
pub async fn block(r: &mut Report, co: &mut Co, node_id: &str) -> FlowResult {
    r.section("CSI: iSCSI volume in raw block mode");
    let params = [("protocol", "iscsi")];
    let name = "pvc-iscsi-block";
    let mut v = flows::create(
        r,
        co,
        "csi-block-create-volume",
        name,
        32 * MIB,
        None,
        &params,
    )
    .await?;
    torn_down_on_failure!(co, v, node_id, block_steps(r, co, &mut v, node_id).await)
}

async fn block_steps(r: &mut Report, co: &mut Co, v: &mut Volume, node_id: &str) -> FlowResult {
    let check = "csi-block-controller-publish-attaches";
    flows::controller_publish(r, co, check, v, node_id, GUEST_IQN).await?;
    let iqn = v
        .publish_context
        .get("target_iqn")
        .cloned()
        .unwrap_or_default();
    let staged = co.stage(v, CHAP_SEALING_SECRET).await;
    r.check(
        "csi-block-stage-logs-in",
        staged.and_then(|()| {
            ensure(iscsi_sessions().contains(&iqn), || {
                format!("no session to {iqn}: {:?}", iscsi_sessions())
            })?;
            ensure(mounted_fs(&v.staging).is_none(), || {
                "staging path mounted".into()
            })
        }),
    )?;
    let published = co.publish(v).await;
    r.check(
        "csi-block-publish-device-unformatted",
        published.and_then(|()| {
            ensure(is_block_device(&v.target), || {
                format!("{} is not a block device", v.target.display())
            })?;
            // blkid -p exits 2 when it finds no signature: mkfs must not run in block mode.
            let target = v.target.display().to_string();
            match run(&["blkid", "-p", &target]) {
                Ok(found) => Err(format!("a signature on the raw volume: {found}")),
                Err(_) => Ok(()),
            }
        }),
    )?;
    let data = pattern(&v.id);
    r.check(
        "csi-block-pod-writes-device",
        write_device(&v.target, &data),
    )?;
    co.unpublish(v)
        .await
        .map_err(|e| format!("unpublish: {e}"))?;
    let unstaged = co.unstage(v).await;
    let gone = wait_until(10, || !iscsi_sessions().contains(&iqn)).await;
    r.check(
        "csi-block-unstage-logs-out",
        unstaged.and_then(|()| ensure(gone, || format!("session to {iqn} left"))),
    )?;
    let on_lv = direct_read(&lv_path(v));
    r.check(
        "csi-block-write-reaches-volume",
        on_lv.and_then(|got| ensure(got == data, || format!("{} differs", lv_path(v)))),
    )?;
    flows::unpublish_and_delete(r, co, "csi-block", v, node_id).await
}

/// 1 MiB that names the volume, line by line.
fn pattern(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIB as usize);
    let mut i = 0;
    while out.len() < MIB as usize {
        out.extend_from_slice(format!("{id} block line {i}\n").as_bytes());
        i += 1;
    }
    out.truncate(MIB as usize);
    out
}

/// Write `data` at the start of the device at `path` and flush it.
fn write_device(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// The first MiB of a device, read past the page cache (`dd iflag=direct`).
fn direct_read(dev: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("dd")
        .args([
            &format!("if={dev}"),
            "bs=1M",
            "count=1",
            "iflag=direct",
            "status=none",
        ])
        .output()
        .map_err(|e| format!("dd: {e}"))?;
    ensure(out.status.success(), || {
        format!("dd if={dev}: {}", String::from_utf8_lossy(&out.stderr))
    })?;
    Ok(out.stdout)
}

/// The NVMe/TCP flow.
pub async fn nvme(r: &mut Report, co: &mut Co, node_id: &str) -> FlowResult {
    r.section("CSI: NVMe/TCP volume with ext4");
    let params = [("protocol", "nvme")];
    let name = "pvc-nvme-ext4";
    let mut v = flows::create(
        r,
        co,
        "csi-nvme-create-volume",
        name,
        64 * MIB,
        Some("ext4"),
        &params,
    )
    .await?;
    torn_down_on_failure!(co, v, node_id, nvme_steps(r, co, &mut v, node_id).await)
}

const NVME_TEXT: &str = "written by the pod through shelf-csi's NVMe/TCP volume\n";

async fn nvme_steps(r: &mut Report, co: &mut Co, v: &mut Volume, node_id: &str) -> FlowResult {
    let check = "csi-nvme-controller-publish-attaches";
    flows::controller_publish(r, co, check, v, node_id, GUEST_NQN).await?;
    let nqn = v
        .publish_context
        .get("target_nqn")
        .cloned()
        .unwrap_or_default();
    let staged = co.stage(v, CHAP_SEALING_SECRET).await;
    r.check(
        "csi-nvme-stage-connects-mkfs",
        staged.and_then(|()| {
            ensure(nvme_subsystems().contains(&nqn), || {
                format!("no controller of {nqn:?}: {:?}", nvme_subsystems())
            })?;
            let fs = mounted_fs(&v.staging);
            ensure(fs.as_deref() == Some("ext4"), || {
                format!("staging has {fs:?}")
            })
        }),
    )?;
    publish_and_check(r, co, v, "csi-nvme-publish-bind-mount").await?;
    let file = v.target.join("hello.txt");
    r.check("csi-nvme-pod-writes", flows::write_synced(&file, NVME_TEXT))?;
    co.unpublish(v)
        .await
        .map_err(|e| format!("unpublish: {e}"))?;
    let first = co.unstage(v).await;
    let again = co.unstage(v).await;
    let gone = wait_until(10, || !nvme_subsystems().contains(&nqn)).await;
    r.check(
        "csi-nvme-unstage-disconnects",
        first.and(again).and_then(|()| {
            ensure(gone, || format!("a controller of {nqn} is left"))?;
            ensure(mounted_fs(&v.staging).is_none(), || {
                "staging still mounted".into()
            })
        }),
    )?;
    // The file is on the appliance's LV: mount it there, read-only.
    r.check(
        "csi-nvme-data-on-volume",
        read_on_lv(v, "hello.txt", NVME_TEXT),
    )?;
    flows::unpublish_and_delete(r, co, "csi-nvme", v, node_id).await
}

/// Mount the share's LV read-only on the appliance side and compare `file` with `want`.
fn read_on_lv(v: &Volume, file: &str, want: &str) -> Result<(), String> {
    let dir = Path::new("/mnt/csi-check");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let d = dir.display().to_string();
    run(&["mount", "-o", "ro,noload", &lv_path(v), &d])?;
    let got = flows::read(&dir.join(file));
    let _ = run(&["umount", &d]);
    got.and_then(|t| ensure(t == want, || format!("{file} on the LV holds {t:?}")))
}

/// The NFS flow.
pub async fn nfs(r: &mut Report, co: &mut Co, node_id: &str) -> FlowResult {
    r.section("CSI: NFS volume (a filesystem share, kernel nfsd)");
    let params = [("protocol", "nfs")];
    // 320 MiB: XFS's smallest filesystem is 300 MiB, should the share be XFS.
    let mut v = flows::create(
        r,
        co,
        "csi-nfs-create-volume",
        "pvc-nfs",
        320 * MIB,
        Some(""),
        &params,
    )
    .await?;
    torn_down_on_failure!(co, v, node_id, nfs_steps(r, co, &mut v, node_id).await)
}

const NFS_TEXT: &str = "written by the pod through shelf-csi's NFS volume\n";

async fn nfs_steps(r: &mut Report, co: &mut Co, v: &mut Volume, node_id: &str) -> FlowResult {
    // The node's [node] ip (guest.sh: 127.0.0.1) is the NFS client the export is opened to.
    let check = "csi-nfs-controller-publish-attaches";
    flows::controller_publish(r, co, check, v, node_id, "127.0.0.1").await?;
    let export = v
        .publish_context
        .get("nfs_export")
        .cloned()
        .unwrap_or_default();
    let staged = co.stage(v, CHAP_SEALING_SECRET).await;
    r.check(
        "csi-nfs-stage-mounts",
        staged.and_then(|()| {
            let fs = mounted_fs(&v.staging).unwrap_or_default();
            let src = mount_source(&v.staging);
            ensure(
                fs.starts_with("nfs") && src.as_deref() == Some(export.as_str()),
                || format!("staging has {fs:?} from {src:?}, export {export:?}"),
            )
        }),
    )?;
    publish_and_check(r, co, v, "csi-nfs-publish-bind-mount").await?;
    let file = v.target.join("hello.txt");
    r.check("csi-nfs-pod-writes", flows::write_synced(&file, NFS_TEXT))?;
    // The server is this guest: the file is in the exported directory.
    let server_path = Path::new(export.split_once(':').map_or("", |(_, p)| p)).join("hello.txt");
    let on_server = flows::read(&server_path);
    r.check(
        "csi-nfs-write-reaches-share",
        on_server.and_then(|t| ensure(t == NFS_TEXT, || format!("the share holds {t:?}"))),
    )?;
    co.unpublish(v)
        .await
        .map_err(|e| format!("unpublish: {e}"))?;
    let first = co.unstage(v).await;
    let again = co.unstage(v).await;
    r.check(
        "csi-nfs-unstage-unmounts",
        first.and(again).and_then(|()| {
            ensure(mounted_fs(&v.staging).is_none(), || {
                "staging still mounted".into()
            })
        }),
    )?;
    flows::unpublish_and_delete(r, co, "csi-nfs", v, node_id).await
}
