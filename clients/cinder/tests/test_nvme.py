"""ShelfNVMeTCPDriver against the real shelfd on this host, whose kernel has no nvmet
(the test says so in its names): the driver must refuse to start with shelfd's precise
reason, report ``NVMe-oF`` to the scheduler, refuse a connector without an NQN, and pass
shelfd's ``unsupported`` refusal of the export through as Cinder's backend error. The
attach itself (``nvme connect`` and os-brick's NVMeOFConnector with the connection_info
shelfd returns) runs in the VM tier, whose Debian kernel has nvmet (docs/vm-tier.md)."""

from __future__ import annotations

import pytest

from cinder import context as cinder_context
from cinder import exception

from conftest import make_driver
from shelf_cinder.driver import ShelfNVMeTCPDriver

HOST_NQN = "nqn.2014-08.org.nvmexpress:uuid:6c2ad7a4-3d3b-4b6a-9a54-0d6c3a1f7e21"


@pytest.fixture
def nvme_driver(appliance):
    drv = make_driver(appliance, "shelf-nvme", cls=ShelfNVMeTCPDriver)
    drv.do_setup(cinder_context.get_admin_context())
    return drv


def nvmet_state(appliance) -> str:
    with appliance.client() as c:
        return c.pool_show("default")["drivers"]["nvmet"]


def test_without_host_nvmet_setup_error_gives_shelfds_reason(appliance, nvme_driver):
    state = nvmet_state(appliance)
    assert state != "usable", "this host's kernel has no nvmet: the driver cannot be usable"
    assert "module nvmet not loaded" in state and "unused-nvmet" in state, state
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        nvme_driver.check_for_setup_error()
    assert "NVMe-oF" in str(e.value) and state in str(e.value)


def test_stats_report_nvme_of(nvme_driver):
    stats = nvme_driver.get_volume_stats(refresh=True)
    assert stats["storage_protocol"] == "NVMe-oF"
    assert stats["driver_version"] == nvme_driver.VERSION
    assert stats["volume_backend_name"] == "shelf-nvme"


def test_connector_without_nqn_is_refused(nvme_driver, new_volume, made):
    vol = new_volume()
    vol.update(nvme_driver.create_volume(vol))
    made.append(vol.provider_id)
    iscsi_only = {"host": "compute-1", "ip": "127.0.0.1", "initiator": "iqn.1994-05.com.x:c1"}
    with pytest.raises(exception.InvalidConnectorException):
        nvme_driver.initialize_connection(vol, iscsi_only)


def test_without_host_nvmet_export_and_attach_are_unsupported(
    appliance, nvme_driver, new_volume, made, ctx
):
    vol = new_volume()
    vol.update(nvme_driver.create_volume(vol))
    made.append(vol.provider_id)
    connector = {
        "host": "compute-1",
        "ip": "127.0.0.1",
        "initiator": "iqn.1994-05.com.x:c1",
        "nqn": HOST_NQN,
    }
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        nvme_driver.create_export(ctx, vol, connector)
    assert "export.create: unsupported" in str(e.value)
    assert "module nvmet not loaded" in str(e.value)
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        nvme_driver.initialize_connection(vol, connector)
    assert "share.attach: unsupported" in str(e.value)
    with appliance.client() as c:
        assert c.export_list(share=vol.provider_id) == []
        assert c.attachment_list(share=vol.provider_id) == []
