//! The appliance image end to end: image/build-appliance makes a Debian node with systemd
//! and shelf; under qemu (TCG), systemd starts shelf.socket and shelfd (Type=notify) at
//! boot; a share exported over iSCSI on the first boot is back in tgtd after a reboot,
//! because shelfd brings every target back before it reports ready, and so is a formatted
//! share's mount and its kernel-nfsd export.
//!
//! The commands run in the guest come through the kernel command line (systemd.run):
//! the image itself is the product, unchanged by the test.

use std::path::Path;
use std::process::Command;

/// Boot the node image once with `script` run after multi-user.target; returns the console.
fn boot(dir: &Path, image: &Path, script: &str) -> String {
    let append = format!(
        "console=ttyS0 panic=-1 systemd.show_status=0 systemd.run=\"/usr/bin/systemd-run --no-block -p StandardOutput=journal+console /bin/sh -c '{script}; systemctl poweroff'\" systemd.run_success_action=none"
    );
    let out = Command::new("timeout")
        .args([
            "--kill-after=10",
            "600",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
        ])
        .args([
            "-m",
            "2048",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.join("initrd.gz"))
        .arg("-append")
        .arg(&append)
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", image.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("qemu-system-x86_64 (image/vm/install-host-deps installs it)");
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu: {}\n{}",
        out.status,
        tail(&console)
    );
    console
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn the_node_image_boots_shelf_and_brings_targets_back_after_a_reboot() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::Builder::new()
        .prefix("shelf-appliance-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let built = Command::new(format!("{root}/image/build-appliance"))
        .arg("--debug")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "image/build-appliance failed (it needs the Debian mirror for its first build):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = dir.path().join("shelf-node.img");

    let first = boot(
        dir.path(),
        &image,
        "systemctl start multi-user.target; echo SHELFD-$(systemctl is-active shelfd); \
         shelfctl share create vol1 64M && shelfctl export create vol1 iscsi && \
         shelfctl share create docs 64M --filesystem ext4 && \
         shelfctl export create docs nfs --client 127.0.0.1 && echo BOOT1-$((1+1))",
    );
    assert!(first.contains("SHELFD-active"), "{}", tail(&first));
    // Markers are computed in the guest: the console also echoes the kernel command line.
    assert!(first.contains("BOOT1-2"), "{}", tail(&first));

    // tgtd starts empty at every boot; shelfd puts the target back before READY.
    let second = boot(
        dir.path(),
        &image,
        "systemctl start multi-user.target; echo SHELFD-$(systemctl is-active shelfd); \
         echo TARGETS-$(tgtadm --lld iscsi --mode target --op show | grep -c :vol1$); \
         echo MOUNTS-$(findmnt -rn -o TARGET | grep -c /var/lib/shelf/mounts/); \
         echo EXPORTS-$(exportfs -v | grep -c /var/lib/shelf/mounts/); \
         echo LISTED-$(shelfctl share list | grep -c vol1); \
         journalctl -u shelfd --no-pager | tail -25",
    );
    assert!(second.contains("SHELFD-active"), "{}", tail(&second));
    assert!(second.contains("TARGETS-1"), "{}", tail(&second));
    // The formatted share is mounted again and its mount exported by kernel nfsd.
    assert!(second.contains("MOUNTS-1"), "{}", tail(&second));
    assert!(second.contains("EXPORTS-1"), "{}", tail(&second));
    assert!(second.contains("LISTED-1"), "{}", tail(&second));
}
