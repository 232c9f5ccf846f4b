"""Volumes, snapshots, clones, extend, stats and manage, through the driver, checked on
the real appliance (shelf's own view through shelf_client, and the volume files)."""

from __future__ import annotations

import os
import time

import pytest

from cinder import exception
from shelf_client import NotFound

from appliance import HANG, OVER_SUBSCRIPTION, RESERVED_PERCENTAGE, GiB
from conftest import make_driver


def write(path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_create_and_delete_volume_is_one_share_and_delete_is_idempotent(
    appliance, driver, new_volume, made
):
    vol = new_volume(size=1)
    update = driver.create_volume(vol)
    made.append(update["provider_id"])
    with appliance.client() as c:
        share = c.share_show(vol.name, pool="default")
    assert update == {"provider_id": share["id"]}
    assert share["size"] == GiB and share["sparse"] and not share["multiattach"]
    assert share["metadata"] == {"cinder.volume_id": vol.id}
    vol.update(update)

    # A retried RPC (same volume id) gets the first answer: the same share.
    assert driver.create_volume(vol) == update

    driver.delete_volume(vol)
    with appliance.client() as c, pytest.raises(NotFound):
        c.share_show(share["id"])
    # Cinder retries deletes; an already-gone share is success.
    driver.delete_volume(vol)
    other = new_volume()
    other.provider_id = "00000000-0000-4000-8000-000000000000"
    driver.delete_volume(other)


def test_idempotency_keys_are_derived_from_the_cinder_ids(appliance, driver, new_volume, made):
    vol = new_volume()
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    driver.extend_volume(vol, 2)
    driver.delete_volume(vol)
    with appliance.client() as c:
        entries = c.audit_list(limit=50)
    keys = {(e["op"], e["key"]) for e in entries if e["key"] and vol.id in e["key"]}
    assert keys == {
        ("share.create", f"cinder:create_volume:{vol.id}"),
        ("share.resize", f"cinder:grow-2:{vol.id}"),
        ("share.delete", f"cinder:delete_volume:{vol.id}"),
    }


def test_snapshot_and_volume_from_snapshot_grown(appliance, driver, new_volume, new_snapshot, made):
    vol = new_volume(size=1)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    path = appliance.volume_file(vol.provider_id)
    write(path, 4096, b"before-snapshot" * 100)

    snap = new_snapshot(vol)
    snap.update(driver.create_snapshot(snap))
    with appliance.client() as c:
        shelf_snap = c.snapshot_show(snap.provider_id)
    assert shelf_snap["name"] == snap.name and shelf_snap["share"] == vol.provider_id
    write(path, 4096, b"after--snapshot" * 100)

    clone = new_volume(size=2)
    update = driver.create_volume_from_snapshot(clone, snap)
    made.append(update["provider_id"])
    with appliance.client() as c:
        share = c.share_show(update["provider_id"])
    assert share["name"] == clone.name
    assert share["size"] == 2 * GiB, "grown to the new volume's size"
    assert share["origin_snapshot"] == snap.provider_id
    assert share["metadata"] == {"cinder.volume_id": clone.id}
    assert read(appliance.volume_file(share["id"]), 4096, 1500) == b"before-snapshot" * 100

    driver.delete_snapshot(snap)
    driver.delete_snapshot(snap)  # already gone: success
    with appliance.client() as c:
        assert c.snapshot_list(share=vol.provider_id) == []
        assert c.share_show(share["id"])["state"] == "available"

    # A snapshot Cinder knows only by name (no provider_id) is found in its share.
    snap2 = new_snapshot(vol)
    driver.create_snapshot(snap2)
    driver.delete_snapshot(snap2)
    with appliance.client() as c:
        assert c.snapshot_list(share=vol.provider_id) == []


def test_cloned_volume_drops_its_temporary_snapshot(appliance, driver, new_volume, made):
    src = new_volume(size=1)
    src.update(driver.create_volume(src))
    made.append(src.provider_id)
    write(appliance.volume_file(src.provider_id), 0, b"source-data" * 64)

    dst = new_volume(size=3)
    update = driver.create_cloned_volume(dst, src)
    made.append(update["provider_id"])
    with appliance.client() as c:
        share = c.share_show(update["provider_id"])
        assert c.snapshot_list(share=src.provider_id) == [], "temporary snapshot deleted"
    assert share["origin_share"] == src.provider_id and share["size"] == 3 * GiB
    assert read(appliance.volume_file(share["id"]), 0, 704) == b"source-data" * 64

    # The source can be deleted; the clone does not depend on it.
    driver.delete_volume(src)
    assert read(appliance.volume_file(share["id"]), 0, 704) == b"source-data" * 64


def test_cloning_a_missing_source_leaves_nothing(appliance, driver, new_volume):
    src = new_volume()
    src.provider_id = "00000000-0000-4000-8000-000000000001"
    dst = new_volume()
    with pytest.raises(exception.VolumeNotFound):
        driver.create_cloned_volume(dst, src)
    with appliance.client() as c:
        assert c.share_list(name=dst.name) == []


def test_a_failed_clone_deletes_its_temporary_snapshot(appliance, driver, new_volume, made):
    src = new_volume()
    src.update(driver.create_volume(src))
    made.append(src.provider_id)
    dst = new_volume()
    with appliance.client() as c:
        # Something else already holds the new volume's name: share.clone refuses.
        made.append(c.share_create(dst.name, GiB, metadata={"other": "owner"})["share"]["id"])
    with pytest.raises(exception.VolumeBackendAPIException, match="already_exists"):
        driver.create_cloned_volume(dst, src)
    with appliance.client() as c:
        assert c.snapshot_list(share=src.provider_id) == []


def test_delete_volume_removes_leftover_export_and_snapshots(appliance, driver, new_volume, ctx):
    vol = new_volume()
    vol.update(driver.create_volume(vol))
    driver.create_export(ctx, vol, None)
    with appliance.client() as c:
        c.snapshot_create(vol.provider_id, "stray")
    driver.delete_volume(vol)
    with appliance.client() as c:
        assert c.share_list(id=vol.provider_id) == []
        assert c.export_list(share=None) == [] or all(
            e["share"] != vol.provider_id for e in c.export_list()
        )


def test_extend_volume_and_missing_volume(appliance, driver, new_volume, made):
    vol = new_volume(size=1)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    driver.extend_volume(vol, 4)
    with appliance.client() as c:
        assert c.share_show(vol.provider_id)["size"] == 4 * GiB
    assert os.path.getsize(appliance.volume_file(vol.provider_id)) == 4 * GiB
    gone = new_volume()
    gone.provider_id = "00000000-0000-4000-8000-000000000002"
    with pytest.raises(exception.VolumeNotFound):
        driver.extend_volume(gone, 2)


def test_volume_stats_are_the_pools_figures_in_gib(appliance, driver, new_volume, made):
    before = driver.get_volume_stats(refresh=True)
    vol = new_volume(size=3)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    assert (
        driver.get_volume_stats() is before or driver.get_volume_stats() == before
    ), "without refresh the cached stats are returned"
    stats = driver.get_volume_stats(refresh=True)
    with appliance.client() as c:
        pool = c.pool_show("default")
    assert stats["volume_backend_name"] == "shelf-test"
    assert stats["vendor_name"] == "shelf"
    assert stats["storage_protocol"] == "iSCSI"
    assert stats["driver_version"] == driver.VERSION
    assert stats["total_capacity_gb"] == round(pool["size"] / GiB, 2)
    assert 7 < stats["total_capacity_gb"] <= 8
    assert abs(stats["free_capacity_gb"] - round(pool["free"] / GiB, 2)) < 0.05
    assert stats["provisioned_capacity_gb"] == round(pool["provisioned"] / GiB, 2)
    assert stats["provisioned_capacity_gb"] == before["provisioned_capacity_gb"] + 3
    assert stats["total_volumes"] == before["total_volumes"] + 1
    assert stats["reserved_percentage"] == RESERVED_PERCENTAGE
    assert stats["max_over_subscription_ratio"] == OVER_SUBSCRIPTION
    assert stats["thin_provisioning_support"] is True
    assert stats["multiattach"] is True


def test_stats_say_what_shelf_says_of_allocation_and_discard(
    appliance, driver, new_volume, made, ctx
):
    """shelf_allocated_capacity_gb is pool.show's ``allocated`` (counting 64 MiB written
    into a volume); ``discard`` is what an attach's connection_info says, and pool.show's
    own ``discard`` agrees."""
    vol = new_volume(size=1)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    with open(appliance.volume_file(vol.provider_id), "r+b") as f:
        f.write(os.urandom(1 << 20) * 64)
        os.fsync(f.fileno())
    with appliance.client() as c:
        assert c.share_show(vol.provider_id)["allocated"] >= 64 << 20

    def counted():
        # pool.show's figure comes from a pass at most 5 s old (docs/protocol.md).
        with appliance.client() as c:
            return c.pool_show("default")["allocated"] >= 64 << 20

    deadline = time.monotonic() + HANG
    while not counted():
        assert time.monotonic() < deadline, "pool.show allocated never counted the write"
        time.sleep(0.2)
    stats = driver.get_volume_stats(refresh=True)
    with appliance.client() as c:
        pool = c.pool_show("default")
    assert abs(stats["shelf_allocated_capacity_gb"] - round(pool["allocated"] / GiB, 2)) <= 0.01
    assert "allocated_capacity_gb" not in stats, "Cinder's volume manager owns that key"

    connector = {"host": "stats-host", "initiator": "iqn.1994-05.com.redhat:stats-host"}
    driver.create_export(ctx, vol, connector)
    info = driver.initialize_connection(vol, connector)
    try:
        # shelfd's own word (pool.show's discard, from the exporter an attach asks), the
        # attach's answer and what the scheduler is told all agree.
        assert pool["discard"]["iscsi"] is info["data"]["discard"]
        assert stats["discard"] is info["data"]["discard"]
        assert stats["discard"] is True, "tgt LUNs of sparse volumes unmap"
    finally:
        driver.terminate_connection(vol, connector)
        driver.remove_export(ctx, vol)


def test_manage_existing_adopts_a_share_by_name_or_id(appliance, driver, new_volume, made):
    with appliance.client() as c:
        share = c.share_create(f"legacy-{os.getpid()}", 3 * GiB // 2)["share"]
    made.append(share["id"])
    vol = new_volume(size=1)
    ref = {"source-name": share["name"]}
    assert driver.manage_existing_get_size(vol, ref) == 2
    assert driver.manage_existing_get_size(vol, {"source-id": share["id"]}) == 2
    vol.size = 2
    update = driver.manage_existing(vol, ref)
    assert update == {"provider_id": share["id"]}
    vol.update(update)
    with appliance.client() as c:
        assert c.share_show(share["id"])["size"] == 2 * GiB
    # From now on the volume is found by its provider_id, although its name differs.
    driver.extend_volume(vol, 3)
    driver.unmanage(vol)
    with appliance.client() as c:
        assert c.share_show(share["id"])["size"] == 3 * GiB
    for bad in ({"source-name": "no-such-share"}, {}):
        with pytest.raises(exception.ManageExistingInvalidReference):
            driver.manage_existing_get_size(vol, bad)


def test_setup_errors(appliance):
    missing = make_driver(appliance, "shelf-badpool", shelf_pool="nope")
    missing.do_setup(None)
    with pytest.raises(exception.VolumeBackendAPIException, match="nope"):
        missing.check_for_setup_error()
    nosock = make_driver(appliance, "shelf-nosock", shelf_socket=appliance.socket + ".absent")
    with pytest.raises(exception.VolumeBackendAPIException):
        nosock.do_setup(None)


def test_cinder_volume_loads_the_driver_from_its_cinder_conf_name(appliance):
    """As cinder-volume's VolumeManager does: import_object on the volume_driver string,
    with the keyword arguments it passes; then the options appear in the backend's
    section."""
    from oslo_utils import importutils

    from cinder.volume import configuration
    from cinder.volume import driver as cinder_driver

    for name in ("ShelfISCSIDriver", "ShelfNFSDriver"):
        conf = configuration.Configuration(cinder_driver.volume_opts, config_group="shelf-load")
        drv = importutils.import_object(
            f"shelf_cinder.driver.{name}",
            configuration=conf,
            host="cinder-volume@shelf-load",
            cluster_name=None,
            is_vol_db_empty=False,
            active_backend_id=None,
        )
        assert isinstance(drv, cinder_driver.VolumeDriver)
        assert conf.shelf_socket == "/run/shelf/shelf.sock" and conf.shelf_pool is None
        assert {o.name for o in drv.get_driver_options()} == {
            "shelf_socket",
            "shelf_pool",
            "shelf_timeout",
            "shelf_node_name",
            "shelf_migration_peers",
        }


def test_drivers_pass_cinders_own_interface_compliance_check():
    """cinder/tests/compliance/test_volume_drivers.py asserts issubclass(driver,
    VolumeDriverCore) for every driver registered with @interface.volumedriver; the
    same here, and for the manage interface these drivers implement."""
    from cinder import interface
    from cinder.interface import volume_driver, volume_manageable_driver

    from shelf_cinder.driver import ShelfISCSIDriver, ShelfNFSDriver

    for cls in (ShelfISCSIDriver, ShelfNFSDriver):
        assert cls in interface._volume_register
        assert issubclass(cls, volume_driver.VolumeDriverCore)
        assert issubclass(cls, volume_manageable_driver.VolumeManagementDriver)


def test_revert_to_snapshot_gives_the_snapshot_content_back(
    appliance, driver, new_volume, new_snapshot, made, ctx
):
    vol = new_volume(size=1)
    vol.update(driver.create_volume(vol))
    made.append(vol.provider_id)
    path = appliance.volume_file(vol.provider_id)
    write(path, 4096, b"before-snapshot" * 100)
    snap = new_snapshot(vol)
    snap.update(driver.create_snapshot(snap))
    write(path, 4096, b"after--snapshot" * 100)
    write(path, 512 * 1024 * 1024, b"later" * 100)

    driver.revert_to_snapshot(ctx, vol, snap)
    assert read(path, 4096, 1500) == b"before-snapshot" * 100
    assert read(path, 512 * 1024 * 1024, 500) == b"\0" * 500
    with appliance.client() as c:
        share = c.share_show(vol.provider_id)
        assert share["size"] == GiB and share["state"] == "available"
        assert [s["id"] for s in c.snapshot_list(share=vol.provider_id)] == [snap.provider_id]
    # Twice to the same snapshot, after new writes: reverted again (no stale kept answer).
    write(path, 4096, b"second-change!!" * 100)
    driver.revert_to_snapshot(ctx, vol, snap)
    assert read(path, 4096, 1500) == b"before-snapshot" * 100

    # Extended after the snapshot: the share keeps its size; Cinder's extend after the
    # revert is then a no-op.
    driver.extend_volume(vol, 2)
    driver.revert_to_snapshot(ctx, vol, snap)
    with appliance.client() as c:
        assert c.share_show(vol.provider_id)["size"] == 2 * GiB
    driver.extend_volume(vol, 2)
    assert read(path, 4096, 1500) == b"before-snapshot" * 100

    # A snapshot of another volume is refused by shelf and nothing changes.
    other = new_volume(size=1)
    other.update(driver.create_volume(other))
    made.append(other.provider_id)
    other_snap = new_snapshot(other)
    other_snap.update(driver.create_snapshot(other_snap))
    with pytest.raises(exception.VolumeBackendAPIException, match="belongs to share"):
        driver.revert_to_snapshot(ctx, vol, other_snap)
    gone = new_snapshot(vol)
    gone.provider_id = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(exception.SnapshotNotFound):
        driver.revert_to_snapshot(ctx, vol, gone)
