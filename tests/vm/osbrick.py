"""os-brick's NVMeOFConnector in the VM tier's guest, used as Nova uses it (run by
tests/vm/nvme.sh with the venv's python: /opt/os-brick, os-brick from PyPI).

    osbrick.py SHELFCTL SHARE POOL EXPECTED_FILE

get_connector_properties as on a compute host; share.attach with the connector's host, ip
and nqn (what Cinder's shelf driver passes to shelfd); connect_volume with
connection_info['data']; the first MiB of the returned device compared with
EXPECTED_FILE; disconnect_volume. Prints one line per step (connector, discard, device,
data, disconnected) for nvme.sh to check.
"""
import json
import subprocess
import sys

import os_brick
from oslo_config import cfg
from os_brick import privileged  # noqa: F401  (registers [privsep_osbrick])
from os_brick.initiator import connector

# What nova.conf sets for os-brick on a compute host: a lock directory, and how to start
# the privsep daemon (rootwrap on a real node; the venv's privsep-helper here, as root).
CONF_FILE = "/tmp/osbrick.conf"
with open(CONF_FILE, "w") as f:
    f.write("[oslo_concurrency]\nlock_path = /run/os-brick-locks\n"
            "[privsep_osbrick]\nhelper_command = /opt/os-brick/bin/privsep-helper\n")
cfg.CONF(["--config-file", CONF_FILE], project="shelfvm", default_config_files=[])
os_brick.setup(cfg.CONF)  # what a service does once its configuration is loaded
shelfctl, share, pool, want = sys.argv[1:5]

props = connector.get_connector_properties("", "127.0.0.1", False, False)
print("connector", json.dumps({k: props.get(k) for k in ("host", "ip", "nqn")}), flush=True)
assert props.get("nqn"), "os-brick reports no nqn"
attach = {"share": share, "pool": pool, "protocol": "nvme",
          "connector": {"host": props["host"], "ip": props["ip"], "nqn": props["nqn"]}}
reply = json.loads(subprocess.run([shelfctl, "--json", "call", "share.attach", json.dumps(attach)],
                                  check=True, capture_output=True, text=True).stdout)
info = reply["connection_info"]
assert info["driver_volume_type"] == "nvmeof", info
# What Nova reads to give the guest's disk discard="unmap" (a thin LV here: true).
print("discard", json.dumps(info["data"].get("discard")), flush=True)
brick = connector.InitiatorConnector.factory("NVMEOF", root_helper="", use_multipath=False,
                                             device_scan_attempts=5)
device = brick.connect_volume(info["data"])
print("device", json.dumps(device), flush=True)
with open(device["path"], "rb") as f:
    got = f.read(1 << 20)
with open(want, "rb") as f:
    same = got == f.read(1 << 20)
print("data", "same" if same else "differs", flush=True)
brick.disconnect_volume(info["data"], device)
print("disconnected", flush=True)
