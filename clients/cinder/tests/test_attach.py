"""The Nova attach flow, for real: create_export + initialize_connection answer
connection_info, a real initiator (libiscsi's iscsi-inq) logs in with exactly its
fields, terminate_connection makes that login fail."""

from __future__ import annotations

import pytest

from cinder import exception

from appliance import GiB, initiator, login, read_capacity


def connector(name: str, host: str = "compute-1") -> dict:
    """An os-brick connector as Nova sends it (more keys than shelf uses)."""
    return {
        "platform": "x86_64",
        "os_type": "linux",
        "ip": "127.0.0.1",
        "host": host,
        "multipath": False,
        "initiator": name,
        "do_local_attach": False,
        "uuid": "6a5b5c1e-0000-4000-8000-000000000000",
    }


def attach(driver, ctx, vol, conn):
    """What cinder-volume does on attach: create_export, then initialize_connection."""
    driver.create_export(ctx, vol, conn)
    return driver.initialize_connection(vol, conn)


def test_attach_login_detach_reattach(appliance, driver, new_volume, made, ctx):
    vol = new_volume(size=1)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    init = initiator("a")
    info = attach(driver, ctx, vol, connector(init))

    assert info["driver_volume_type"] == "iscsi"
    data = info["data"]
    assert data["target_portal"] == f"127.0.0.1:{appliance.portal_port}"
    assert data["target_iqn"].startswith("iqn.2026-11.org.example.cinder:")
    assert data["target_lun"] == 1 and data["target_discovered"] is False
    assert data["auth_method"] == "CHAP" and data["auth_username"] and data["auth_password"]
    assert data["access_mode"] == "rw"
    assert data["volume_id"] == vol.id, "Cinder's convention: the Cinder volume's id"

    ok = login(info, init)
    assert ok.returncode == 0, f"login with connection_info failed: {ok.stdout}{ok.stderr}"
    other = login(info, initiator("stranger"))
    assert other.returncode != 0, "an initiator that was not attached must not log in"
    assert read_capacity(info, init) == GiB

    # Nova may ask again (e.g. on reboot): the same info, still one attachment.
    assert attach(driver, ctx, vol, connector(init)) == info
    with appliance.client() as c:
        assert len(c.attachment_list(share=vol.provider_id)) == 1

    driver.terminate_connection(vol, connector(init))
    gone = login(info, init)
    assert gone.returncode != 0, "login must fail after terminate_connection"
    driver.remove_export(ctx, vol)
    with appliance.client() as c:
        assert c.export_list(share=vol.provider_id) == []
    driver.remove_export(ctx, vol)  # already gone: fine

    # Attach again after a detach: a fresh export and access (no stale idempotency key).
    info2 = attach(driver, ctx, vol, connector(init))
    again = login(info2, init)
    assert again.returncode == 0, f"login after re-attach failed: {again.stderr}"
    driver.terminate_connection(vol, connector(init))
    assert login(info2, init).returncode != 0


def test_force_detach_without_connector_removes_every_host(
    appliance, driver, new_volume, made, ctx
):
    vol = new_volume(size=1, multiattach=True)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    a, b = initiator("a"), initiator("b")
    info_a = attach(driver, ctx, vol, connector(a, "compute-1"))
    info_b = attach(driver, ctx, vol, connector(b, "compute-2"))
    assert login(info_a, a).returncode == 0 and login(info_b, b).returncode == 0

    # One host leaves: the export stays for the other (multiattach).
    driver.terminate_connection(vol, connector(a, "compute-1"))
    driver.remove_export(ctx, vol)
    assert login(info_a, a).returncode != 0
    assert login(info_b, b).returncode == 0
    with appliance.client() as c:
        assert len(c.export_list(share=vol.provider_id)) == 1

    driver.create_export(ctx, vol, None)
    attach(driver, ctx, vol, connector(a, "compute-1"))
    driver.terminate_connection(vol, None)
    assert login(info_a, a).returncode != 0 and login(info_b, b).returncode != 0
    with appliance.client() as c:
        assert c.attachment_list(share=vol.provider_id) == []


def test_single_attach_volume_refuses_a_second_host(appliance, driver, new_volume, made, ctx):
    vol = new_volume(size=1)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    a, b = initiator("a"), initiator("b")
    attach(driver, ctx, vol, connector(a, "compute-1"))
    with pytest.raises(exception.VolumeBackendAPIException, match="busy|attached"):
        attach(driver, ctx, vol, connector(b, "compute-2"))
    driver.terminate_connection(vol, connector(a, "compute-1"))
    info_b = attach(driver, ctx, vol, connector(b, "compute-2"))
    assert login(info_b, b).returncode == 0
    driver.terminate_connection(vol, connector(b, "compute-2"))


def test_extend_while_attached_is_seen_by_the_initiator(appliance, driver, new_volume, made, ctx):
    vol = new_volume(size=1)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    init = initiator("grow")
    info = attach(driver, ctx, vol, connector(init))
    assert read_capacity(info, init) == GiB
    driver.extend_volume(vol, 2)
    assert read_capacity(info, init) == 2 * GiB
    driver.terminate_connection(vol, connector(init))


def test_connector_without_initiator_is_refused(driver, new_volume, made):
    vol = new_volume()
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    with pytest.raises(exception.InvalidConnectorException):
        driver.initialize_connection(vol, {"host": "compute-1", "ip": "127.0.0.1"})
