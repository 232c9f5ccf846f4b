"""ShelfNFSDriver: the attach flow over NFS, for real. A private ganesha serves shelf's
exports; libnfs's nfs-ls reaches the volume with exactly connection_info's ``export``
and ``name``, and no longer can after terminate_connection."""

from __future__ import annotations

import os
import time

import pytest

from cinder import context as cinder_context
from cinder import exception

from appliance import GiB, HANG, nfs_ls
from conftest import make_driver
from shelf_cinder.driver import ShelfNFSDriver


@pytest.fixture
def nfs_driver(nfs_appliance):
    drv = make_driver(nfs_appliance, "shelf-nfs", cls=ShelfNFSDriver)
    drv.do_setup(cinder_context.get_admin_context())
    drv.check_for_setup_error()
    return drv


def export_url(appliance, info: dict) -> str:
    """The NFS URL of the export, from connection_info's ``export`` only."""
    host, path = info["data"]["export"].split(":", 1)
    assert host == "127.0.0.1"
    return appliance.nfs_url(f"{path.rstrip('/')}/")


def until(check, what: str) -> None:
    """ganesha applies a changed exports file on SIGHUP, a moment after shelfd's reply."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {HANG} s")


def test_nfs_attach_lists_the_volume_and_detach_revokes(nfs_appliance, nfs_driver, new_volume, ctx):
    vol = new_volume(size=1)
    vol.update(nfs_driver.create_volume(vol))
    connector = {"host": "compute-1", "ip": "127.0.0.1", "initiator": "iqn.x:unused"}
    try:
        nfs_driver.create_export(ctx, vol, connector)
        info = nfs_driver.initialize_connection(vol, connector)
        assert info["driver_volume_type"] == "nfs"
        assert info["data"]["name"] == "volume"
        assert info["data"]["volume_id"] == vol.id
        url = export_url(nfs_appliance, info)

        def listed() -> bool:
            """The export lists the file ``name`` names, of the volume's size."""
            out = nfs_ls(url)
            return out.returncode == 0 and any(
                line.split()[-2:] == [str(GiB), info["data"]["name"]]
                for line in out.stdout.splitlines()
                if line.strip()
            )

        until(listed, f"the volume file is not listed at {url}")
        stats = nfs_driver.get_volume_stats(refresh=True)
        assert stats["storage_protocol"] == "nfs"

        nfs_driver.terminate_connection(vol, connector)
        until(lambda: nfs_ls(url).returncode != 0, "access remains after terminate_connection")
        nfs_driver.remove_export(ctx, vol)
        with nfs_appliance.client() as c:
            assert c.export_list(share=vol.provider_id) == []
    finally:
        nfs_driver.delete_volume(vol)
    assert not os.path.exists(nfs_appliance.volume_file(vol.provider_id))


def test_nfs_connector_needs_an_address(nfs_driver, new_volume):
    vol = new_volume()
    vol.update(nfs_driver.create_volume(vol))
    try:
        with pytest.raises(exception.InvalidConnectorException):
            nfs_driver.initialize_connection(vol, {})
    finally:
        nfs_driver.delete_volume(vol)
