//! NVMe/TCP with nvme-cli: connect to the subsystem (unless a controller to it is already
//! there), find the volume's namespace by its NGUID (or UUID) in sysfs, rescan, and
//! disconnect when no staged volume uses the subsystem any more.
//!
//! Trust: sysfs is the kernel's; its attribute values are compared, never interpreted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic::Status;

use super::tools::{offload, Tools};

/// [`controllers_of`] in the real sysfs, off the runtime.
async fn controllers(nqn: &str) -> Result<Vec<String>, Status> {
    let nqn = nqn.to_string();
    offload("scanning /sys/class/nvme", move || {
        Ok(controllers_of(Path::new(SYS_CLASS_NVME), &nqn))
    })
    .await
}

/// Where the kernel lists NVMe controllers.
pub const SYS_CLASS_NVME: &str = "/sys/class/nvme";
/// Where the kernel lists block devices.
pub const SYS_BLOCK: &str = "/sys/block";

/// An NGUID or UUID as compared: lower-case hex without dashes.
fn normal_id(id: &str) -> String {
    id.trim()
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn read_attr(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The controllers (`nvme0`, ...) under `class_dir` connected to subsystem `nqn`.
pub fn controllers_of(class_dir: &Path, nqn: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(class_dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| read_attr(&e.path().join("subsysnqn")).as_deref() == Some(nqn))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The namespace block device (`nvme0n1`) under `block_dir` of subsystem `nqn` whose
/// `nguid` or `uuid` attribute is `id`. Only namespaces of that subsystem count: its
/// `device` (the controller, or the subsystem for a multipath head) must have `nqn` as
/// its `subsysnqn`, so another subsystem's namespace with the same id (a clone made
/// elsewhere, a forged id) is never taken. A multipath path (`nvme0c0n1`) is never the answer: it is hidden and
/// has no /dev node, and it appears before its head (`nvme0n1`), so taking it made mkfs
/// fail on a missing device (found by the VM tier's `csi-nvme-stage-connects-mkfs`).
pub fn namespace_with(block_dir: &Path, nqn: &str, id: &str) -> Option<String> {
    let want = normal_id(id);
    let entries = std::fs::read_dir(block_dir).ok()?;
    let mut found: Vec<String> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("nvme").is_some_and(|n| !n.contains('c'))
        })
        .filter(|e| read_attr(&e.path().join("device/subsysnqn")).as_deref() == Some(nqn))
        .filter(|e| {
            ["nguid", "uuid"]
                .iter()
                .any(|a| read_attr(&e.path().join(a)).is_some_and(|v| normal_id(&v) == want))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Connect to `nqn` at `address:port` as `host_nqn` (unless already connected) and wait
/// for the namespace `nguid`; returns its `/dev` path.
pub async fn connect(
    tools: &Tools,
    nqn: &str,
    address: &str,
    port: &str,
    host_nqn: &str,
    nguid: &str,
    limit: Duration,
) -> Result<PathBuf, Status> {
    if controllers(nqn).await?.is_empty() {
        let cmd = tools.cmd("nvme")?.args([
            "connect",
            "-t",
            "tcp",
            "-a",
            address,
            "-s",
            port,
            "-n",
            nqn,
            "--hostnqn",
            host_nqn,
        ]);
        tools.run(cmd).await?;
    }
    let start = Instant::now();
    loop {
        if let Some(device) = find(nqn, nguid).await? {
            return Ok(device);
        }
        if start.elapsed() > limit {
            return Err(Status::deadline_exceeded(format!(
                "no namespace with NGUID {nguid} of {nqn} appeared within {} s",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `/dev` node of namespace `nguid` of subsystem `nqn` now ([`namespace_with`] in
/// the real sysfs, off the runtime). Looked up each time it is needed: `/dev/nvmeXnY`
/// names change when a controller reconnects.
pub async fn find(nqn: &str, nguid: &str) -> Result<Option<PathBuf>, Status> {
    let (nqn, nguid) = (nqn.to_string(), nguid.to_string());
    offload("scanning /sys/block", move || {
        Ok(namespace_with(Path::new(SYS_BLOCK), &nqn, &nguid).map(|n| Path::new("/dev").join(n)))
    })
    .await
}

/// Disconnect every controller of `nqn` (nothing connected is fine).
pub async fn disconnect(tools: &Tools, nqn: &str) -> Result<(), Status> {
    if controllers(nqn).await?.is_empty() {
        return Ok(());
    }
    tools
        .run(tools.cmd("nvme")?.args(["disconnect", "-n", nqn]))
        .await
        .map(|_| ())
}

/// Rescan the namespaces of every controller of `nqn`, so a grown one shows its size.
pub async fn rescan(tools: &Tools, nqn: &str) -> Result<(), Status> {
    for ctrl in controllers(nqn).await? {
        let dev = format!("/dev/{ctrl}");
        tools
            .run(tools.cmd("nvme")?.args(["ns-rescan", dev.as_str()]))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs-shaped tree in a temp dir (the attribute names and value formats the
    /// kernel uses: `%pU` for nguid and uuid); NVMe itself cannot run on this machine.
    #[test]
    fn finds_controllers_and_namespaces_in_a_sysfs_shaped_tree() {
        let root = tempfile::tempdir().unwrap();
        let class = root.path().join("class");
        let block = root.path().join("block");
        for (ctrl, nqn) in [("nvme0", "nqn.a:v1"), ("nvme1", "nqn.a:v2")] {
            std::fs::create_dir_all(class.join(ctrl)).unwrap();
            std::fs::write(class.join(ctrl).join("subsysnqn"), format!("{nqn}\n")).unwrap();
        }
        let id = "6f1c2b9a-0d4e-4c1e-9a53-3d1a2b3c4d5e";
        let ns = |name: &str, nqn: &str| {
            std::fs::create_dir_all(block.join(name).join("device")).unwrap();
            std::fs::write(
                block.join(name).join("device/subsysnqn"),
                format!("{nqn}\n"),
            )
            .unwrap();
        };
        // Another subsystem's namespace with the same NGUID, listed first: never taken.
        ns("nvme2n1", "nqn.other:v1");
        std::fs::write(block.join("nvme2n1/nguid"), format!("{id}\n")).unwrap();
        for name in ["nvme0c0n1", "nvme0n1"] {
            ns(name, "nqn.a:v1");
            std::fs::write(block.join(name).join("nguid"), format!("{id}\n")).unwrap();
        }
        ns("nvme1n1", "nqn.a:v2");
        std::fs::write(
            block.join("nvme1n1/uuid"),
            "00000000-0000-0000-0000-000000000001\n",
        )
        .unwrap();
        assert_eq!(controllers_of(&class, "nqn.a:v1"), ["nvme0"]);
        assert!(controllers_of(&class, "nqn.a:v9").is_empty());
        assert_eq!(
            namespace_with(&block, "nqn.a:v1", &id.to_uppercase().replace('-', "")).as_deref(),
            Some("nvme0n1")
        );
        assert_eq!(
            namespace_with(&block, "nqn.a:v2", "00000000000000000000000000000001").as_deref(),
            Some("nvme1n1")
        );
        assert_eq!(
            namespace_with(&block, "nqn.a:v1", "00000000000000000000000000000001"),
            None,
            "not in that subsystem"
        );
        assert_eq!(namespace_with(&block, "nqn.a:v1", "ffff"), None);
        // Before its head appears, a path alone is not a namespace device.
        std::fs::remove_dir_all(block.join("nvme0n1")).unwrap();
        assert_eq!(namespace_with(&block, "nqn.a:v1", id), None);
    }
}
