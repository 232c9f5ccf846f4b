"""The test appliance: a scratch XFS, a private tgtd (and ganesha) and a real shelfd,
shared by the driver tests (tests/conftest.py) and Cinder's functional stack
(functional/), which runs one or two of them as Cinder backends.

Everything is private: the XFS is a loop-mounted image in its own ``/var/tmp``
directory, tgtd listens on 127.0.0.1 on a free port with its own control port, shelfd
has its own state directory and socket, and its NFS drivers point at absent files in
the scratch directory. :meth:`Appliance.stop` stops shelfd and tgtd, unmounts and
removes the directory; it is idempotent and also registered with atexit, so a test run
that fails or is interrupted leaves nothing behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

from shelf_client import Client

REPO = Path(__file__).resolve().parents[3]
#: Bytes in one Cinder gigabyte.
GiB = 1 << 30
#: Seconds a reply or a start-up may take before the test calls it a hang.
HANG = 60.0
IQN_PREFIX = "iqn.2026-11.org.example.cinder"
NQN_PREFIX = "nqn.2026-11.org.example.cinder"
#: The pool's capacity policy, which get_volume_stats must report as the appliance's.
RESERVED_PERCENTAGE = 5
OVER_SUBSCRIPTION = 10.0


def run(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=HANG)
    if out.returncode != 0:
        raise RuntimeError(f"{argv} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_control_port() -> int:
    """A tgtd control port whose socket nobody has (tgtd: /var/run/tgtd/socket.<N>),
    in 20000-31999: tgtd refuses a -C above 32767 ("argument value out of range")."""
    for _ in range(100):
        n = 20000 + int.from_bytes(os.urandom(2), "big") % 12000
        if not Path(f"/var/run/tgtd/socket.{n}").exists():
            return n
    raise RuntimeError("no free tgtd control port")


class Appliance:
    """A scratch XFS of ``size_gib``, a private tgtd and a shelfd using both, its one
    pool ``default`` with the given capacity policy."""

    def __init__(
        self,
        ganesha: bool = False,
        size_gib: int = 8,
        reserved_percentage: int = RESERVED_PERCENTAGE,
        over_subscription: float = OVER_SUBSCRIPTION,
    ) -> None:
        self.with_ganesha = ganesha
        self.size_gib = size_gib
        self.reserved_percentage = reserved_percentage
        self.over_subscription = over_subscription
        self.ganesha: Optional[subprocess.Popen] = None
        self.nfs_port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="shelf-cinder-", dir="/var/tmp"))
        self.mount = self.base / "mnt"
        self.pool = self.mount / "pool"
        self.socket = str(self.base / "run" / "shelf.sock")
        self.log = self.base / "shelfd.log"
        self.portal_port = free_port()
        self.control = free_control_port()
        self.tgtd: Optional[subprocess.Popen] = None
        self.shelfd: Optional[subprocess.Popen] = None
        self.mounted = False

    def start(self) -> "Appliance":
        atexit.register(self.stop)  # a net under the session finalizer; stop is idempotent
        image = self.base / "xfs.img"
        self.mount.mkdir()
        with open(image, "wb") as f:
            f.truncate(self.size_gib * GiB)
        run("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
        run("mount", "-o", "loop", str(image), str(self.mount))
        self.mounted = True
        self._start_tgtd()
        nfs = (
            f'exports_file = "{self.base / "unused.exports"}"\n'
            f'ganesha_exports = "{self.base / "unused-ganesha.conf"}"\n'
            f'ganesha_pidfile = "{self.base / "unused-ganesha.pid"}"\n'
        )
        if self.with_ganesha:
            nfs = self._start_ganesha()
        config = self.base / "shelf.toml"
        config.write_text(
            f'state_dir = "{self.base / "state"}"\n'
            f'socket = "{self.socket}"\n'
            "reconcile_interval = 0\n"
            f"[nfs]\n{nfs}"
            # This host's kernel has no nvmet; an absent configfs root in the scratch
            # directory makes that so whatever the host (tests/test_nvme.py).
            f'[nvme]\nconfigfs = "{self.base / "unused-nvmet"}"\n'
            'portal = "127.0.0.1:4420"\n'
            f'nqn_prefix = "{NQN_PREFIX}"\n'
            "[iscsi]\n"
            f'portal = "127.0.0.1:{self.portal_port}"\n'
            f"tgt_control_port = {self.control}\n"
            f'iqn_prefix = "{IQN_PREFIX}"\n'
            "[pools.default]\n"
            f'path = "{self.pool}"\n'
            f"reserved_percentage = {self.reserved_percentage}\n"
            f"max_over_subscription_ratio = {self.over_subscription}\n"
        )
        self.start_shelfd()
        return self

    def start_shelfd(self) -> None:
        """shelfd on this appliance's config (again after :meth:`kill_shelfd`), once it
        answers ``hello``."""
        shelfd = os.environ.get("SHELFD") or str(REPO / "target" / "debug" / "shelfd")
        with open(self.log, "ab") as log:
            self.shelfd = subprocess.Popen(
                [shelfd, "--config", str(self.base / "shelf.toml")],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        with Client(self.socket, timeout=HANG, connect_timeout=HANG) as c:
            assert 1 in c.hello()["protocols"]

    def kill_shelfd(self) -> None:
        """SIGKILL shelfd, as a node that dies mid-operation (tgtd and the XFS stay)."""
        if self.shelfd is not None and self.shelfd.poll() is None:
            self.shelfd.kill()
            self.shelfd.wait(timeout=HANG)

    def _start_tgtd(self) -> None:
        """tgtd on a free portal port and control port; another pick if it exits (a port
        taken meanwhile by another process)."""
        for _ in range(5):
            with open(self.base / "tgtd.log", "wb") as log:
                self.tgtd = subprocess.Popen(
                    [
                        "tgtd",
                        "-f",
                        "-C",
                        str(self.control),
                        "--iscsi",
                        f"portal=127.0.0.1:{self.portal_port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self._until(
                lambda: self.tgtd.poll() is not None
                or self.tgtadm("--op", "show", "--mode", "sys") is not None,
                "tgtd",
            )
            if self.tgtd.poll() is None:
                return
            self.portal_port, self.control = free_port(), free_control_port()
        log_text = (self.base / "tgtd.log").read_text(errors="replace")
        raise RuntimeError(f"tgtd does not start: {log_text}")

    def _start_ganesha(self) -> str:
        """A private ganesha.nfsd (NFSv4 on 127.0.0.1:<nfs_port>) whose exports file
        shelfd owns; returns the [nfs] settings pointing shelfd at it."""
        d = self.base / "ganesha"
        for sub in ("recov", "ccache"):
            (d / sub).mkdir(parents=True)
        exports = d / "shelf-exports.conf"
        exports.write_text("# written by shelfd\n")
        conf = d / "ganesha.conf"
        conf.write_text(
            f"NFS_CORE_PARAM {{ Bind_addr = 127.0.0.1; NFS_Port = {self.nfs_port}; "
            "Protocols = 4; Enable_RQUOTA = false; Enable_NLM = false; Enable_UDP = false; }\n"
            f'NFSv4 {{ RecoveryBackend = fs; RecoveryRoot = "{d / "recov"}"; Graceless = true; '
            "Lease_Lifetime = 10; Only_Numeric_Owners = true; }\n"
            f'NFS_KRB5 {{ Active_krb5 = false; CCacheDir = "{d / "ccache"}"; }}\n'
            "LOG { Default_Log_Level = EVENT; }\n"
            f'%include "{exports}"\n'
        )
        pidfile = d / "ganesha.pid"
        self.ganesha = subprocess.Popen(
            ["ganesha.nfsd", "-F", "-f", str(conf), "-p", str(pidfile), "-L", str(d / "log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._until(
            lambda: pidfile.exists() and nfs_ls(self.nfs_url("/")).returncode == 0, "ganesha"
        )
        return (
            'driver = "ganesha"\nhost = "127.0.0.1"\n'
            f'exports_file = "{self.base / "unused.exports"}"\n'
            f'ganesha_exports = "{exports}"\nganesha_pidfile = "{pidfile}"\n'
        )

    def nfs_url(self, path: str) -> str:
        return f"nfs://127.0.0.1{path}?version=4&nfsport={self.nfs_port}"

    def _until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} did not come up within {HANG} s")

    def tgtadm(self, *args: str) -> Optional[str]:
        out = subprocess.run(
            ["tgtadm", "--lld", "iscsi", "-C", str(self.control), *args],
            capture_output=True,
            text=True,
            timeout=HANG,
        )
        return out.stdout if out.returncode == 0 else None

    def client(self) -> Client:
        return Client(self.socket, timeout=HANG)

    def volume_file(self, share_id: str) -> Path:
        return self.pool / "shares" / share_id / "volume"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        for proc, sig in (
            (self.shelfd, signal.SIGTERM),
            (self.tgtd, signal.SIGKILL),
            (self.ganesha, signal.SIGTERM),
        ):
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.shelfd = self.tgtd = self.ganesha = None
        if self.mounted:
            for _ in range(50):
                if subprocess.run(["umount", str(self.mount)], capture_output=True).returncode == 0:
                    self.mounted = False
                    break
                time.sleep(0.1)
            else:
                lazy = subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)
                self.mounted = lazy.returncode != 0
        if not self.mounted:
            shutil.rmtree(self.base, ignore_errors=True)


def nfs_ls(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nfs-ls", url], capture_output=True, text=True, timeout=HANG)


def initiator(tag: str) -> str:
    return f"iqn.1994-05.com.redhat:cinder-test-{tag}-{uuid.uuid4().hex[:8]}"


def login(info: dict, initiator_name: str) -> subprocess.CompletedProcess:
    """A real iSCSI login and INQUIRY with exactly the fields of connection_info."""
    d = info["data"]
    url = (
        f"iscsi://{d['auth_username']}%{d['auth_password']}@{d['target_portal']}"
        f"/{d['target_iqn']}/{d['target_lun']}"
    )
    return subprocess.run(
        ["iscsi-inq", "-i", initiator_name, url], capture_output=True, text=True, timeout=HANG
    )


def read_capacity(info: dict, initiator_name: str) -> int:
    d = info["data"]
    url = (
        f"iscsi://{d['auth_username']}%{d['auth_password']}@{d['target_portal']}"
        f"/{d['target_iqn']}/{d['target_lun']}"
    )
    out = run("iscsi-readcapacity16", "-i", initiator_name, url)
    for line in out.splitlines():
        if line.startswith("Total size:"):
            return int(line.split(":", 1)[1])
    raise AssertionError(f"no size in {out}")
