"""deploy/kubernetes/ is what an operator applies; these tests keep it applicable and in
step with the shelf-csi binary, offline (no cluster on these machines):

* every YAML file parses, and kustomization.yaml lists every manifest but the examples;
* every object validates against the Kubernetes OpenAPI schemas of the oldest and the
  newest Kubernetes that kubernetes-validate ships, in strict mode (an unknown or
  misspelt field is an error); the one custom resource, VolumeSnapshotClass, is checked
  field by field here since no schema of it ships;
* names hold together: namespaces, ServiceAccounts, Roles and their bindings,
  ConfigMaps and Secrets that pods and StorageClasses refer to, the driver name;
* the ConfigMap's config.toml passes ``shelf-csi --check-config`` in the controller and
  the node modes, every flag the manifests give shelf-csi is one its ``--help`` lists,
  and the sidecars talk to the socket shelf-csi serves;
* docs/csi.md names the pinned sidecar versions and the example StorageClasses.

What CreateVolume makes of each StorageClass's parameters is tested against a real
shelfd in tests/csi_manifests.rs.

The binary is ``$SHELF_CSI`` (tests/csi_manifests.rs passes cargo's), else
target/debug/shelf-csi of this checkout.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import kubernetes_validate
from kubernetes_validate.utils import all_versions
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy" / "kubernetes"
SEAL_RS = REPO / "src" / "bin" / "shelf-csi" / "seal.rs"

#: Kinds that are custom resources (no schema in kubernetes-validate): checked by hand.
CUSTOM_KINDS = {"VolumeSnapshotClass"}
#: Kinds that are not namespaced.
CLUSTER_KINDS = {
    "Namespace",
    "CSIDriver",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "VolumeSnapshotClass",
}
#: The image that is the plugin (kustomization.yaml's `images` entry renames it).
PLUGIN_IMAGE = "shelf-csi"


def shelf_csi() -> str:
    path = os.environ.get("SHELF_CSI") or str(REPO / "target" / "debug" / "shelf-csi")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no shelf-csi binary at {path}: run `cargo build` or set SHELF_CSI")
    return path


def yaml_files() -> List[Path]:
    return sorted(DEPLOY.glob("*.yaml"))


def load(path: Path) -> List[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomization() -> dict:
    (k,) = load(DEPLOY / "kustomization.yaml")
    return k


def applied_files() -> List[Path]:
    return [DEPLOY / r for r in kustomization()["resources"]]


def applied() -> List[Tuple[Path, dict]]:
    """Every object kustomization.yaml applies, with its file."""
    return [(p, o) for p in applied_files() for o in load(p)]


def examples() -> List[Tuple[Path, dict]]:
    return [(p, o) for p in sorted(DEPLOY.glob("*.example.yaml")) for o in load(p)]


def objects(kind: str, everything: bool = False) -> List[dict]:
    pool = applied() + (examples() if everything else [])
    return [o for _, o in pool if o["kind"] == kind]


def one(kind: str) -> dict:
    found = objects(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_specs() -> Iterator[Tuple[str, dict]]:
    for kind in ("Deployment", "DaemonSet"):
        for o in objects(kind):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def plugin_containers() -> Iterator[Tuple[str, dict, dict]]:
    """(workload, pod spec, container) of every container that runs shelf-csi itself
    (the plugin image with no command of its own; the tunnel runs ssh from it)."""
    for name, spec in pod_specs():
        for c in spec["containers"]:
            if c["image"].split(":")[0] == PLUGIN_IMAGE and "command" not in c:
                yield name, spec, c


def flag(args: List[str], name: str) -> str:
    """The value of `--name=value` in a container's args."""
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    raise AssertionError(f"--{name} not in {args}")


def config_text() -> str:
    return one("ConfigMap")["data"]["config.toml"]


def check_config(tmp_path: Path, mode: str) -> str:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text())
    r = subprocess.run(
        [shelf_csi(), "--check-config", "--config", str(cfg), "--mode", mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, f"--mode {mode}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def driver_name(tmp_path: Path) -> str:
    m = re.search(r'driver_name: "([^"]+)"', check_config(tmp_path, "controller"))
    assert m, "shelf-csi --check-config printed no driver_name"
    return m.group(1)


# --- files and schemas -------------------------------------------------------------


def test_every_file_parses_and_kustomization_lists_every_manifest():
    files = yaml_files()
    assert files, f"no manifests in {DEPLOY}"
    for p in files:
        docs = load(p)
        assert docs, f"{p.name}: empty"
        for d in docs:
            assert isinstance(d, dict) and "kind" in d and "apiVersion" in d, p.name
    listed = {p.name for p in applied_files()}
    want = {
        p.name
        for p in files
        if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")
    }
    assert listed == want, f"kustomization.yaml resources {sorted(listed)} != {sorted(want)}"
    k = kustomization()
    assert set(k) <= {"apiVersion", "kind", "resources", "images"}, sorted(k)
    assert k["kind"] == "Kustomization"
    assert [i["name"] for i in k["images"]] == [PLUGIN_IMAGE]


def schema_versions() -> List[str]:
    versions = all_versions()
    return sorted({versions[0], versions[-1]})


@pytest.mark.parametrize("version", schema_versions())
def test_every_object_validates_strictly_against_the_kubernetes_schemas(version):
    checked = 0
    for path, obj in applied() + examples():
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(x) for x in e.path)
            pytest.fail(f"{path.name}: {obj['kind']}/{obj['metadata']['name']}: {where}: {e.message}")
        checked += 1
    assert checked >= 20, f"only {checked} objects validated"


def test_a_validation_error_is_caught():
    """The check above can fail: a misspelt field of a real manifest is refused."""
    ds = dict(one("DaemonSet"))
    ds["spec"] = dict(ds["spec"], updateStrategyy={"type": "RollingUpdate"})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, kubernetes_validate.latest_version(), strict=True)


def test_the_volume_snapshot_class_has_only_its_fields(tmp_path):
    (vsc,) = objects("VolumeSnapshotClass")
    assert vsc["apiVersion"] == "snapshot.storage.k8s.io/v1"
    assert set(vsc) <= {"apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"}
    assert vsc["deletionPolicy"] in ("Delete", "Retain")
    assert vsc["driver"] == driver_name(tmp_path)
    for k, v in (vsc.get("parameters") or {}).items():
        assert isinstance(k, str) and isinstance(v, str), (k, v)


# --- names that must agree ----------------------------------------------------------


def test_namespaced_objects_are_in_the_plugins_namespace():
    ns = one("Namespace")["metadata"]["name"]
    for path, obj in applied() + examples():
        md = obj["metadata"]
        if obj["kind"] in CLUSTER_KINDS:
            assert "namespace" not in md, f"{path.name}: {obj['kind']} is cluster-scoped"
        else:
            assert md.get("namespace") == ns, f"{path.name}: {obj['kind']}/{md['name']}"


def test_bindings_and_pods_name_accounts_and_roles_that_exist():
    accounts = {o["metadata"]["name"] for o in objects("ServiceAccount")}
    roles = {
        ("Role", o["metadata"]["name"]) for o in objects("Role")
    } | {("ClusterRole", o["metadata"]["name"]) for o in objects("ClusterRole")}
    ns = one("Namespace")["metadata"]["name"]
    bound = set()
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for b in objects(kind):
            ref = b["roleRef"]
            assert (ref["kind"], ref["name"]) in roles, f"{kind}/{b['metadata']['name']}: {ref}"
            bound.add((ref["kind"], ref["name"]))
            for s in b["subjects"]:
                assert s["kind"] == "ServiceAccount" and s["name"] in accounts, s
                assert s["namespace"] == ns, s
    assert bound == roles, f"roles bound to nobody: {roles - bound}"
    for name, spec in pod_specs():
        assert spec["serviceAccountName"] in accounts, name


def test_pods_mount_config_maps_and_secrets_that_exist():
    maps = {o["metadata"]["name"] for o in objects("ConfigMap")}
    secrets = {o["metadata"]["name"] for o in objects("Secret", everything=True)}
    for name, spec in pod_specs():
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{name}/{c['name']}: {m['name']}"
        for v in spec["volumes"]:
            if "configMap" in v:
                assert v["configMap"]["name"] in maps, f"{name}: {v}"
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets, f"{name}: {v}"


def test_the_driver_name_is_the_same_everywhere(tmp_path):
    driver = driver_name(tmp_path)
    assert one("CSIDriver")["metadata"]["name"] == driver
    classes = objects("StorageClass")
    assert len(classes) >= 4
    for sc in classes:
        assert sc["provisioner"] == driver, sc["metadata"]["name"]
    for vsc in objects("VolumeSnapshotClass"):
        assert vsc["driver"] == driver
    (ds,) = objects("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (registrar,) = [c for c in spec["containers"] if "node-driver-registrar" in c["image"]]
    reg_path = flag(registrar["args"], "kubelet-registration-path")
    assert reg_path == f"/var/lib/kubelet/plugins/{driver}/csi.sock"
    plugin_dir = [v for v in spec["volumes"] if v["name"] == "plugin-dir"][0]
    assert plugin_dir["hostPath"]["path"] == f"/var/lib/kubelet/plugins/{driver}"


def test_the_csi_driver_is_attach_required_persistent_only():
    spec = one("CSIDriver")["spec"]
    assert spec["attachRequired"] is True  # ControllerPublishVolume is share.attach
    assert spec["podInfoOnMount"] is False
    assert spec["volumeLifecycleModes"] == ["Persistent"]
    assert spec["fsGroupPolicy"] in ("ReadWriteOnceWithFSType", "File", "None")


def test_storage_classes_name_the_chap_key_secret_for_publish_and_stage():
    (secret,) = [o for o in objects("Secret", everything=True) if "chapKey" in o.get("stringData", {})]
    chap_const = re.search(r'pub const CHAP_KEY: &str = "([^"]+)";', SEAL_RS.read_text())
    assert chap_const and chap_const.group(1) == "chapKey", "seal.rs names the key differently"
    name, ns = secret["metadata"]["name"], secret["metadata"]["namespace"]
    assert secret["stringData"]["chapKey"] == "", "the example must not ship a usable key"
    iscsi = [sc for sc in objects("StorageClass") if sc["parameters"].get("protocol") == "iscsi"]
    assert len(iscsi) >= 2
    for sc in iscsi:
        p = sc["parameters"]
        for step in ("controller-publish", "node-stage"):
            assert p[f"csi.storage.k8s.io/{step}-secret-name"] == name, sc["metadata"]["name"]
            assert p[f"csi.storage.k8s.io/{step}-secret-namespace"] == ns, sc["metadata"]["name"]
    # The attacher reads the publish secret, and only that one.
    (role,) = objects("Role")
    rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert rules == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name], "verbs": ["get"]}
    ]
    for cr in objects("ClusterRole"):
        assert all("secrets" not in r["resources"] for r in cr["rules"]), cr["metadata"]["name"]


def test_images_are_pinned():
    for name, spec in pod_specs():
        for c in spec["containers"]:
            image, _, tag = c["image"].rpartition(":")
            assert image and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}/{c['name']}: {c['image']}"


# --- the plugin's command line and config -------------------------------------------


def test_the_config_map_passes_check_config_in_both_modes(tmp_path):
    for mode in ("controller", "node"):
        check_config(tmp_path, mode)


def test_check_config_refuses_a_broken_config(tmp_path):
    """The check above can fail: a misspelt key is refused by the same command."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(config_text().replace("state_dir", "statedir"))
    r = subprocess.run(
        [shelf_csi(), "--check-config", "--config", str(cfg), "--mode", "node"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "statedir" in r.stderr, r.stderr


def help_flags() -> Dict[str, str]:
    out = subprocess.run([shelf_csi(), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(re.findall(r"^\s+(?:-\w, )?--([a-z][a-z-]*)(?: <([A-Z_]+)>)?", out.stdout, re.M))


def test_every_shelf_csi_flag_in_the_manifests_exists(tmp_path):
    flags = help_flags()
    assert {"endpoint", "config", "mode", "check-config"} <= set(flags), flags
    modes = set()
    for name, spec, c in plugin_containers():
        for a in c["args"]:
            assert a.startswith("--"), f"{name}: {a}"
            key, eq, value = a[2:].partition("=")
            assert key in flags, f"{name}: --{key} is not a shelf-csi flag ({sorted(flags)})"
            assert bool(eq) == bool(flags[key]), f"{name}: {a}"
        modes.add(flag(c["args"], "mode"))
        # The args as they stand, checked by the binary itself (with the ConfigMap's file
        # in place of the mounted one).
        cfg = tmp_path / "config.toml"
        cfg.write_text(config_text())
        args = [a for a in c["args"] if not a.startswith("--config=")]
        r = subprocess.run(
            [shelf_csi(), *args, f"--config={cfg}", "--check-config"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, f"{name}: {shlex.join(c['args'])}: {r.stderr}"
    assert modes == {"controller", "node"}


def test_the_plugin_reads_the_config_map_and_the_sidecars_its_socket():
    for name, spec, c in plugin_containers():
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        config = Path(flag(c["args"], "config"))
        assert volumes[mounts[str(config.parent)]]["configMap"]["name"] == "shelf-csi-config"
        assert config.name in one("ConfigMap")["data"]
        endpoint = flag(c["args"], "endpoint")
        assert endpoint.startswith("unix:///"), endpoint
        socket = Path(endpoint[len("unix://") :])
        socket_volume = mounts[str(socket.parent)]
        sidecars = [x for x in spec["containers"] if x is not c and "command" not in x]
        assert sidecars, name
        for s in sidecars:
            assert flag(s["args"], "csi-address") == str(socket), f"{name}/{s['name']}"
            assert {m["name"]: m["mountPath"] for m in s["volumeMounts"]}[socket_volume] == str(
                socket.parent
            ), f"{name}/{s['name']}"


def test_every_appliance_socket_has_a_tunnel(tmp_path):
    """Each [[appliance]] socket of the config is the local end of one ssh -L forward in
    the controller pod, on a volume the plugin container mounts too."""
    out = check_config(tmp_path, "controller")
    sockets = re.findall(r'socket: "([^"]+)"', out)
    assert sockets
    (deploy,) = objects("Deployment")
    spec = deploy["spec"]["template"]["spec"]
    tunnels = [c for c in spec["containers"] if c.get("command") == ["/usr/bin/ssh"]]
    local_ends = []
    for t in tunnels:
        args = t["args"]
        local_ends.append(args[args.index("-L") + 1].split(":", 1)[0])
        assert "ExitOnForwardFailure=yes" in args and "StreamLocalBindUnlink=yes" in args
    assert sorted(local_ends) == sorted(sockets)
    (plugin,) = [c for _, _, c in plugin_containers() if flag(c["args"], "mode") == "controller"]
    plugin_mounts = {m["mountPath"]: m["name"] for m in plugin["volumeMounts"]}
    for s in sockets:
        vol = plugin_mounts[str(Path(s).parent)]
        for t in tunnels:
            assert {m["name"]: m["mountPath"] for m in t["volumeMounts"]}[vol] == str(Path(s).parent)


def test_the_node_plugin_can_reach_the_host():
    (ds,) = objects("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    (plugin,) = [c for _, _, c in plugin_containers() if flag(c["args"], "mode") == "node"]
    assert plugin["securityContext"]["privileged"] is True
    mounts = {m["mountPath"]: m for m in plugin["volumeMounts"]}
    assert mounts["/var/lib/kubelet"]["mountPropagation"] == "Bidirectional"
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path in ("/dev", "/etc/iscsi", "/etc/nvme", "/lib/modules", "/var/lib/kubelet"):
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path, path
    state = re.search(r'state_dir = "([^"]+)"', config_text()).group(1)
    assert volumes[mounts[state]["name"]]["hostPath"]["path"] == state


def test_nodes_report_a_segment_the_volumes_can_be_bound_to(tmp_path):
    """Every volume's accessible_topology is its appliance's segment, which becomes the
    PV's node affinity: the nodes must report one of the configured appliances, or no pod
    could ever use a volume (and WaitForFirstConsumer classes could not provision)."""
    out = check_config(tmp_path, "node")
    segment = re.search(r'segment: Some\(\s*"([^"]+)"', out)
    assert segment, "the ConfigMap's [node] has no segment"
    appliances = re.findall(r'name: "([^"]+)",\s*socket', check_config(tmp_path, "controller"))
    assert segment.group(1) in appliances, (segment.group(1), appliances)
    for sc in objects("StorageClass"):
        assert sc["volumeBindingMode"] == "WaitForFirstConsumer", sc["metadata"]["name"]


def test_docs_name_the_pinned_sidecars_and_the_example_classes():
    """docs/csi.md, "Deployment", says which sidecar versions and StorageClasses ship;
    a bump or a rename here must be said there too."""
    doc = (REPO / "docs" / "csi.md").read_text()
    for name, spec in pod_specs():
        for c in spec["containers"]:
            image, _, tag = c["image"].rpartition(":")
            if image == PLUGIN_IMAGE:
                continue
            short = image.rsplit("/", 1)[1]
            assert f"{short} {tag}" in doc, f"docs/csi.md does not say {short} {tag}"
    for sc in objects("StorageClass"):
        assert f"`{sc['metadata']['name']}`" in doc, sc["metadata"]["name"]
