"""Fixtures: a real appliance (scratch XFS, private tgtd, real shelfd: see
appliance.py) and the driver, a subclass of the real Cinder ``VolumeDriver`` configured
through Cinder's own ``Configuration``. The session finalizers stop every appliance,
also when tests fail.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any, Callable, Iterator, List

import pytest

from cinder import context as cinder_context
from cinder import objects
from cinder.volume import configuration
from cinder.volume import driver as cinder_driver
from oslo_config import cfg

from appliance import Appliance
from shelf_cinder.driver import ShelfISCSIDriver

objects.register_all()


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (tests/cinder_driver.rs on a hang) unwinds like Ctrl-C, so fixture
    finalizers and the atexit net (appliance.py) still clean up."""
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def appliance() -> Iterator[Appliance]:
    a = Appliance()
    try:
        a.start()
        yield a
    finally:
        print(f"--- shelfd log ---\n{a.log_text()[-6000:]}")
        a.stop()


@pytest.fixture(scope="session")
def nfs_appliance() -> Iterator[Appliance]:
    """An appliance whose NFS exports are served by a private ganesha."""
    a = Appliance(ganesha=True)
    try:
        a.start()
        yield a
    finally:
        print(f"--- shelfd log ---\n{a.log_text()[-6000:]}")
        a.stop()


def make_driver(
    appliance: Appliance, backend: str, cls: type = ShelfISCSIDriver, **overrides: Any
) -> Any:
    """A driver as cinder-volume builds it: a Configuration for the backend's section
    of cinder.conf, with the shelf options set there."""
    conf = configuration.Configuration(cinder_driver.volume_opts, config_group=backend)
    drv = cls(configuration=conf, host=f"cinder-test@{backend}")
    settings = {"shelf_socket": appliance.socket, "volume_backend_name": backend}
    settings.update(overrides)
    for name, value in settings.items():
        cfg.CONF.set_override(name, value, group=backend)
    return drv


@pytest.fixture
def driver(appliance: Appliance) -> ShelfISCSIDriver:
    drv = make_driver(appliance, "shelf-test")
    drv.do_setup(cinder_context.get_admin_context())
    drv.check_for_setup_error()
    return drv


@pytest.fixture
def ctx() -> Any:
    return cinder_context.get_admin_context()


@pytest.fixture
def new_volume(ctx: Any) -> Callable[..., Any]:
    """Cinder Volume objects (not in a database: the driver must not need one)."""

    def make(size: int = 1, multiattach: bool = False) -> Any:
        return objects.Volume(
            context=ctx,
            id=str(uuid.uuid4()),
            _name_id=None,
            size=size,
            multiattach=multiattach,
            provider_id=None,
            provider_location=None,
            provider_auth=None,
            display_name="test",
        )

    return make


@pytest.fixture
def new_snapshot(ctx: Any) -> Callable[[Any], Any]:
    def make(volume: Any) -> Any:
        return objects.Snapshot(
            context=ctx,
            id=str(uuid.uuid4()),
            volume_id=volume.id,
            volume_size=volume.size,
            volume=volume,
            provider_id=None,
        )

    return make


@pytest.fixture
def made(appliance: Appliance) -> Iterator[List[str]]:
    """Share ids a test made; deleted (with snapshots and exports) when it ends."""
    ids: List[str] = []
    yield ids
    with appliance.client() as c:
        for share_id in ids:
            try:
                c.share_delete(share_id, recursive=True, force=True)
            except Exception:
                pass
