//! deploy/kubernetes/ against the code it configures.
//!
//! * The offline suite `clients/manifests/` (run through `clients/run-tests manifests`
//!   with this build's `shelf-csi`): every manifest parses and validates strictly against
//!   the Kubernetes OpenAPI schemas, names agree, the ConfigMap's config passes
//!   `--check-config`, every `shelf-csi` flag exists (see its module comment).
//! * Here: every example StorageClass's parameters, turned into a CreateVolumeRequest the
//!   way external-provisioner does it, make a volume on a real shelfd appliance through the
//!   real plugin, with the protocol and filesystem the class says. The manifests are read
//!   with Debian's python3-yaml (scripts/install-deps); the Rust side has no YAML parser.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bpfman_csi::v1::volume_capability::access_mode::Mode;
use bpfman_csi::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use bpfman_csi::v1::{CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, VolumeCapability};
use common::csi::Csi;
use serde_json::Value;

const GIB: u64 = 1 << 30;

/// Longer than the suite ever needs (with a first-time `pip install` of
/// kubernetes-validate, ~100 MB of schemas); past this the run is a hang and is stopped.
const HANG: Duration = Duration::from_secs(900);

#[test]
fn manifest_suite_passes_against_this_shelf_csi() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/manifests/run-tests");
    let mut cmd = Command::new(&script);
    cmd.arg("-q")
        .arg("-rxs")
        .env("SHELF_CSI", env!("CARGO_BIN_EXE_shelf-csi"));
    let f = common::proc::output_within(cmd, HANG);
    match f.status {
        Some(s) if s.success() => println!("{}", f.stdout),
        Some(s) => panic!(
            "{} failed ({s}):\n{}\n{}",
            script.display(),
            f.stdout,
            f.stderr
        ),
        None => panic!("{} did not finish within {HANG:?}", script.display()),
    }
}

/// The objects of one manifest file, as JSON values.
fn manifest(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(file);
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg("import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)")
        .arg(&path)
        .output()
        .expect("run /usr/bin/python3 (scripts/install-deps installs python3-yaml)");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `csi.storage.k8s.io/` keys external-provisioner (v5.1.0,
/// `removePrefixedParameters`) takes out of a StorageClass's parameters; any other key
/// with that prefix makes it refuse the class.
const PROVISIONER_KEYS: &[&str] = &[
    "fstype",
    "provisioner-secret-name",
    "provisioner-secret-namespace",
    "controller-publish-secret-name",
    "controller-publish-secret-namespace",
    "node-stage-secret-name",
    "node-stage-secret-namespace",
    "node-publish-secret-name",
    "node-publish-secret-namespace",
    "controller-expand-secret-name",
    "controller-expand-secret-namespace",
    "secret-name",
    "secret-namespace",
    "node-expand-secret-name",
    "node-expand-secret-namespace",
];

/// What external-provisioner sends for a PVC of `class`: the parameters without its own
/// keys plus the `--extra-create-metadata` ones, and the capability (a filesystem when the
/// class names an fstype, else a raw block device; NFS: a mount of no fstype).
fn request_for(class: &Value, pvc: &str) -> Result<(CreateVolumeRequest, Option<String>), String> {
    let name = class["metadata"]["name"].as_str().unwrap();
    let mut parameters = HashMap::new();
    let mut fs_type = None;
    for (k, v) in class["parameters"].as_object().unwrap() {
        let v = v
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {k} is not a string"));
        match k.strip_prefix("csi.storage.k8s.io/") {
            Some("fstype") => fs_type = Some(v.to_string()),
            Some(own) if PROVISIONER_KEYS.contains(&own) => {}
            Some(_) => {
                return Err(format!(
                    "{name}: external-provisioner refuses the reserved key {k}"
                ))
            }
            None => {
                parameters.insert(k.clone(), v.to_string());
            }
        }
    }
    parameters.insert("csi.storage.k8s.io/pvc/name".into(), pvc.into());
    parameters.insert("csi.storage.k8s.io/pvc/namespace".into(), "default".into());
    parameters.insert("csi.storage.k8s.io/pv/name".into(), format!("pv-{pvc}"));
    let nfs = parameters.get("protocol").map(String::as_str) == Some("nfs");
    let access_type = if fs_type.is_some() || nfs {
        AccessType::Mount(MountVolume {
            fs_type: fs_type.clone().unwrap_or_default(),
            ..Default::default()
        })
    } else {
        AccessType::Block(BlockVolume {})
    };
    let mode = if nfs {
        Mode::MultiNodeMultiWriter
    } else {
        Mode::SingleNodeWriter
    };
    let request = CreateVolumeRequest {
        name: format!("pv-{pvc}"),
        capacity_range: Some(CapacityRange {
            required_bytes: GIB as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(access_type),
        }],
        parameters,
        ..Default::default()
    };
    Ok((request, fs_type))
}

#[test]
fn every_example_storage_class_creates_a_volume_on_a_real_appliance() {
    let classes = manifest("storageclasses.yaml");
    assert!(classes.len() >= 4, "{} StorageClasses", classes.len());
    let csi = Csi::controller("manifests", &[4 * GIB]);
    let mut ctl = csi.controller.clone();
    for (i, class) in classes.iter().enumerate() {
        let name = class["metadata"]["name"].as_str().unwrap();
        let (request, fs_type) = request_for(class, &format!("claim-{i}")).unwrap();
        let protocol = request.parameters["protocol"].clone();
        let volume = csi
            .block_on(ctl.create_volume(request))
            .unwrap_or_else(|e| panic!("StorageClass {name}: CreateVolume: {e:?}"))
            .into_inner()
            .volume
            .unwrap();
        let context = &volume.volume_context;
        assert_eq!(
            context.get("protocol"),
            Some(&protocol),
            "{name}: {context:?}"
        );
        assert_eq!(
            context.get("fsType"),
            fs_type.as_ref(),
            "{name}: {context:?}"
        );
        assert!(volume.capacity_bytes >= GIB as i64, "{name}");
        csi.block_on(ctl.delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            secrets: HashMap::new(),
        }))
        .unwrap_or_else(|e| panic!("StorageClass {name}: DeleteVolume: {e:?}"));
    }
}

#[test]
fn a_reserved_key_the_provisioner_does_not_know_is_caught() {
    // The check in request_for can fail: a misspelt csi.storage.k8s.io/ key is refused
    // there, as external-provisioner would refuse it.
    let class = serde_json::json!({
        "metadata": {"name": "typo"},
        "parameters": {"protocol": "iscsi", "csi.storage.k8s.io/fs-type": "ext4"}
    });
    let err = request_for(&class, "x").unwrap_err();
    assert!(err.contains("fs-type"), "{err}");
}
