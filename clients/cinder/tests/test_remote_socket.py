"""A Cinder host that is not the appliance reaches shelfd's socket through OpenSSH
unix-socket forwarding (docs/cinder.md, "Cinder on another host").

Real OpenSSH on both ends: a private sshd on 127.0.0.1 (its own free port, host key,
authorized key, config and pid file in a temporary directory) stands for the appliance's
sshd, and ``ssh -N -L <local socket>:<shelfd socket>`` for the tunnel a systemd unit keeps
up on the Cinder host. The driver is configured with ``shelf_socket`` = the forwarded
socket and runs setup, a create and a delete through it. Everything is stopped and
removed at the end, also on failure.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cinder import exception

from appliance import HANG, free_port
from conftest import make_driver

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
PRIVSEP = Path("/run/sshd")


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=HANG,
    )


def _connects(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=HANG).close()
        return True
    except OSError:
        return False


def _until(ready, what: str, d: Path, proc=None) -> None:
    """Wait for ``ready`` (bounded: past HANG it is a hang); fail at once if ``proc``
    exits first."""
    deadline = time.monotonic() + HANG
    while not ready():
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            logs = [(d / f).read_text(errors="replace") for f in ("ssh.log", "sshd.log")]
            raise RuntimeError(f"{what} did not come up: {logs}")
        time.sleep(0.05)


def _stop(proc) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def tunnel(appliance):
    """sshd on 127.0.0.1 and an ``ssh -L`` forwarding a local socket to shelfd's; the
    forwarded socket's path."""
    if not (Path(SSHD).exists() and Path(SSH).exists()):
        pytest.skip("OpenSSH server and client are not installed (openssh-server)")
    d = Path(tempfile.mkdtemp(prefix="shelf-ssh-", dir="/var/tmp"))
    made_privsep = not PRIVSEP.exists()
    sshd = ssh = None
    try:
        if made_privsep:  # sshd's compiled-in privilege separation directory
            PRIVSEP.mkdir(mode=0o755)
        _keygen(d / "host_key")
        _keygen(d / "cinder_key")
        # As docs/cinder.md: the key may forward and do nothing else.
        pub = (d / "cinder_key.pub").read_text()
        (d / "authorized_keys").write_text(f'restrict,port-forwarding,command="/bin/false" {pub}')
        port = free_port()
        (d / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{port}\n"
            f"HostKey {d / 'host_key'}\n"
            f"PidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
            "AllowUsers root\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "AllowStreamLocalForwarding local\nX11Forwarding no\n"
            "PermitTTY no\nStrictModes no\nLogLevel DEBUG1\n"
        )
        sshd = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=open(d / "sshd.log", "wb"),
        )
        _until(lambda: _listens(port), "sshd", d, sshd)
        host_pub = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        remote = d / "remote.sock"
        ssh = subprocess.Popen(
            [
                SSH, "-N", "-F", "/dev/null", "-p", str(port),
                "-i", str(d / "cinder_key"),
                "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "StreamLocalBindUnlink=yes",
                "-o", "StreamLocalBindMask=0177",
                "-o", "ExitOnForwardFailure=yes",
                "-o", "ServerAliveInterval=15",
                "-L", f"{remote}:{appliance.socket}",
                "root@127.0.0.1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(d / "ssh.log", "wb"),
        )  # fmt: skip
        _until(lambda: remote.exists(), "the ssh tunnel", d, ssh)
        yield remote, ssh
    finally:
        for log in ("ssh.log", "sshd.log"):
            if (d / log).exists():
                print(f"--- {log} ---\n{(d / log).read_text(errors='replace')[-3000:]}")
        _stop(ssh)
        _stop(sshd)
        shutil.rmtree(d, ignore_errors=True)
        if made_privsep:
            shutil.rmtree(PRIVSEP, ignore_errors=True)


def test_driver_reaches_shelfd_through_an_ssh_forwarded_socket(appliance, tunnel, new_volume):
    remote, ssh = tunnel
    assert str(remote) != appliance.socket and _connects(remote)
    assert remote.stat().st_mode & 0o777 == 0o600  # only the Cinder user may use it
    drv = make_driver(appliance, "shelf-remote", shelf_socket=str(remote))
    drv.do_setup(None)
    drv.check_for_setup_error()
    vol = new_volume(size=1)
    vol.update(drv.create_volume(vol))
    try:
        with appliance.client() as c:  # seen on the appliance's own socket
            share = c.share_show(vol.provider_id)
        assert share["name"] == vol.name and share["metadata"]["cinder.volume_id"] == vol.id
        assert drv.get_volume_stats(refresh=True)["total_volumes"] >= 1
    finally:
        drv.delete_volume(vol)
    with appliance.client() as c:
        assert [s for s in c.share_list(pool="default") if s["name"] == vol.name] == []

    # The tunnel gone: the driver fails with Cinder's exception rather than hanging.
    _stop(ssh)
    with pytest.raises(exception.VolumeBackendAPIException):
        drv.create_volume(new_volume(size=1))
