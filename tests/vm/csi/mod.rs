//! The VM tier's CSI part: this test binary, copied into the guest, is the container
//! orchestrator. tests/vm/guest.sh starts `shelf-csi --mode all` (appliance `vm1` = the
//! guest's shelfd, node `shelfvm`) and runs this binary's ignored test
//! [`csi_co_in_guest`], which drives the plugin over its unix socket as kubelet and the
//! external provisioner, attacher and resizer would, while the guest's real initiators do
//! the work: open-iscsi (`iscsiadm`, iscsid, CHAP), nvme-cli and nvme-tcp, the kernel NFS
//! client, mkfs, mount. Each check prints `PASS name` / `FAIL name: why` as guest.sh does;
//! [`CHECKS`] is added to tests/vm.rs's list. See docs/vm-tier.md.

mod co;
mod flows;
mod iscsi;
mod others;
mod report;

use std::path::PathBuf;

use co::Co;
use report::Report;

/// Set by guest.sh to the plugin's socket: the test runs only where it is set.
pub const GUEST_ENV: &str = "SHELF_VM_CSI_SOCKET";
/// guest.sh's start (`date +%s%N`), so the check lines' times match the script's.
const T0_ENV: &str = "SHELF_VM_T0";

/// Every check the CO reports; tests/vm.rs requires each to have passed.
pub const CHECKS: &[&str] = &[
    "csi-connect",
    "csi-identity-plugin-info",
    "csi-identity-probe-ready",
    "csi-identity-controller-capability",
    "csi-node-capabilities",
    "csi-node-get-info",
    // iSCSI, ext4 (iscsi.rs)
    "csi-iscsi-create-volume",
    "csi-iscsi-controller-publish-attaches",
    "csi-iscsi-publish-context-sealed-chap",
    "csi-iscsi-stage-chap-login-mkfs",
    "csi-iscsi-publish-bind-mount",
    "csi-iscsi-pod-writes",
    "csi-iscsi-unpublish",
    "csi-iscsi-unstage-logs-out",
    "csi-iscsi-wrong-chap-key-refused",
    "csi-iscsi-restage",
    "csi-iscsi-republish",
    "csi-iscsi-restage-keeps-data",
    "csi-iscsi-controller-expand",
    "csi-iscsi-node-expand-grows-fs",
    "csi-iscsi-volume-stats",
    "csi-iscsi-unstage-again",
    "csi-iscsi-controller-unpublish-detaches",
    "csi-iscsi-delete-volume",
    // iSCSI, raw block (others.rs)
    "csi-block-create-volume",
    "csi-block-controller-publish-attaches",
    "csi-block-stage-logs-in",
    "csi-block-publish-device-unformatted",
    "csi-block-pod-writes-device",
    "csi-block-unstage-logs-out",
    "csi-block-write-reaches-volume",
    "csi-block-controller-unpublish-detaches",
    "csi-block-delete-volume",
    // NVMe/TCP, ext4
    "csi-nvme-create-volume",
    "csi-nvme-controller-publish-attaches",
    "csi-nvme-stage-connects-mkfs",
    "csi-nvme-publish-bind-mount",
    "csi-nvme-pod-writes",
    "csi-nvme-unstage-disconnects",
    "csi-nvme-data-on-volume",
    "csi-nvme-controller-unpublish-detaches",
    "csi-nvme-delete-volume",
    // NFS (a filesystem share)
    "csi-nfs-create-volume",
    "csi-nfs-controller-publish-attaches",
    "csi-nfs-stage-mounts",
    "csi-nfs-publish-bind-mount",
    "csi-nfs-pod-writes",
    "csi-nfs-write-reaches-share",
    "csi-nfs-unstage-unmounts",
    "csi-nfs-controller-unpublish-detaches",
    "csi-nfs-delete-volume",
];

/// The CO: only inside the VM tier's guest (guest.sh names the plugin's socket in
/// [`GUEST_ENV`]); anywhere else it fails and says so, since the initiators it drives
/// (and the appliance behind the plugin) are the guest's.
#[test]
#[ignore = "the VM tier's CSI orchestrator: runs inside the guest only, started by tests/vm/guest.sh"]
fn csi_co_in_guest() {
    let Some(socket) = std::env::var_os(GUEST_ENV).map(PathBuf::from) else {
        panic!(
            "csi_co_in_guest is the CSI orchestrator of the VM tier and runs only inside its \
             guest, where tests/vm/guest.sh sets {GUEST_ENV} to shelf-csi's socket; it logs in \
             with iscsiadm, connects NVMe and mounts. Run `cargo test --test vm -- --nocapture` \
             to boot the guest."
        );
    };
    let t0 = std::env::var(T0_ENV).ok().and_then(|s| s.parse().ok());
    // libtest has printed `test csi::csi_co_in_guest ... ` without a newline: the check
    // lines must start lines of their own.
    println!();
    let mut report = Report::new(t0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let co = report.check("csi-connect", Co::connect(&socket).await);
        if let Ok(co) = co {
            flows::run_all(&mut report, co).await;
        }
    });
    assert_eq!(report.fails, 0, "{} CSI check(s) failed", report.fails);
}
