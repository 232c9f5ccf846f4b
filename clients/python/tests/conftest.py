"""Fixtures: a real shelfd on a scratch directory, and clients connected to it.

The daemon is the Rust binary: ``$SHELFD`` if set (``tests/python_client.rs`` passes
cargo's ``CARGO_BIN_EXE_shelfd``), else ``target/debug/shelfd`` of this checkout. Its
configuration points every export driver at something private and absent (an exports
file and ganesha files in the scratch directory, a tgtd control port nobody listens
on), so nothing on the machine is touched. Each daemon is stopped (SIGTERM, then
SIGKILL) and its directory removed by a finalizer, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from shelf_client import Client

REPO = Path(__file__).resolve().parents[3]

#: Seconds any single reply may take before the test calls it a hang.
HANG = 60.0


def shelfd_binary() -> str:
    path = os.environ.get("SHELFD") or str(REPO / "target" / "debug" / "shelfd")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no shelfd binary at {path}: run `cargo build` or set SHELFD")
    return path


class Daemon:
    """One shelfd process on its own scratch directory."""

    def __init__(self, extra_config: str = "", max_frame_size: int = 65536) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="shelf-py-"))
        self.state = self.base / "state"
        self.socket = str(self.base / "run" / "shelf.sock")
        self.config = self.base / "shelf.toml"
        self.log = self.base / "shelfd.log"
        self.max_frame_size = max_frame_size
        control_port = 30000 + (os.getpid() % 2000) * 4 + Daemon._count % 4
        Daemon._count += 1
        text = (
            f'state_dir = "{self.state}"\n'
            f'socket = "{self.socket}"\n'
            f"max_frame_size = {max_frame_size}\n"
            "reconcile_interval = 0\n"
            f"{extra_config}\n"
            "[nfs]\n"
            f'exports_file = "{self.base / "unused.exports"}"\n'
            f'ganesha_exports = "{self.base / "unused-ganesha.conf"}"\n'
            f'ganesha_pidfile = "{self.base / "unused-ganesha.pid"}"\n'
            "[iscsi]\n"
            f"tgt_control_port = {control_port}\n"
            'iqn_prefix = "iqn.2026-11.org.example.pyclient"\n'
        )
        self.config.write_text(text)
        self.proc: Optional[subprocess.Popen] = None

    _count = 0

    def start(self) -> "Daemon":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [shelfd_binary(), "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "RUST_LOG": "debug"},
            )
        try:
            with Client(self.socket, timeout=HANG, connect_timeout=30.0) as c:
                assert 1 in c.hello()["protocols"]
        except Exception as e:
            code = self.proc.poll()
            self.stop()
            pytest.fail(f"shelfd did not start (exit {code}): {e}\n{self.log_text()}")
        return self

    def client(self, **kw) -> Client:
        kw.setdefault("timeout", HANG)
        kw.setdefault("max_request_size", self.max_frame_size)
        return Client(self.socket, **kw)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def volume_path(self, share_id: str) -> Path:
        """The file of a share in the default pool (docs/config.md section 7)."""
        return self.state / "pools" / "default" / "shares" / share_id / "volume"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def start_daemon(request) -> Callable[..., Daemon]:
    """Start a daemon of its own with extra configuration; stopped at the test's end."""
    started: List[Daemon] = []

    def start(extra_config: str = "", **kw) -> Daemon:
        d = Daemon(extra_config, **kw)
        started.append(d)
        return d.start()

    def finish() -> None:
        for d in started:
            # Captured output: pytest shows it only when the test failed.
            print(f"--- shelfd log ({d.base}) ---\n{d.log_text()[-8000:]}")
            d.cleanup()

    request.addfinalizer(finish)
    return start


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """One daemon shared by the tests that only need a working server (they use unique
    names, so they do not see each other's objects). Its pool may not be
    over-subscribed (ratio 1.0), so a share larger than the filesystem gets no_space."""
    d = Daemon("[pools.default]\nmax_over_subscription_ratio = 1.0\n")
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    """A fresh connection to the shared daemon."""
    with daemon.client() as c:
        yield c


@pytest.fixture
def name() -> Callable[[str], str]:
    """Unique object names: ``name("vol")`` → ``vol-1a2b3c4d``."""
    tag = uuid.uuid4().hex[:8]
    return lambda prefix: f"{prefix}-{tag}"
