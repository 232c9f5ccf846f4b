"""Generic volume groups through the driver, against the real appliance: a consistent
group snapshot is one shelf group snapshot (every member at one instant, checked in the
volume and snapshot files), volumes made from it, and deletes that tolerate retries.

Cinder looks a group type's specs up in its database, which these driver tests do not
run; the one lookup (``group_types.get_group_type_specs``) is answered from a table here,
and the test names say so. Everything shelf does is real."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from cinder import objects
from cinder.volume import group_types

CG_TYPE = str(uuid.uuid4())
PLAIN_TYPE = str(uuid.uuid4())
SPECS = {CG_TYPE: "<is> True", PLAIN_TYPE: False}


@pytest.fixture
def group_type_lookup_faked(monkeypatch):
    def specs(group_type_id, key=False):
        assert key == "consistent_group_snapshot_enabled"
        return SPECS[group_type_id]

    monkeypatch.setattr(group_types, "get_group_type_specs", specs)


def write(path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_group(ctx, type_id):
    return objects.Group(context=ctx, id=str(uuid.uuid4()), group_type_id=type_id)


def make_group_snapshot(ctx, group):
    return objects.GroupSnapshot(
        context=ctx, id=str(uuid.uuid4()), group_id=group.id, group_type_id=group.group_type_id
    )


def test_consistent_group_snapshot_with_group_type_lookup_faked(
    appliance, driver, new_volume, new_snapshot, made, ctx, group_type_lookup_faked
):
    group = make_group(ctx, CG_TYPE)
    assert driver.create_group(ctx, group) == {"status": "available"}
    vols = []
    for i in range(3):
        v = new_volume(size=1)
        v.update(driver.create_volume(v))
        made.append(v.provider_id)
        write(appliance.volume_file(v.provider_id), 0, bytes([i + 1]) * 65536)
        vols.append(v)
    assert driver.update_group(ctx, group, add_volumes=vols) == (None, None, None)
    before = [digest(appliance.volume_file(v.provider_id)) for v in vols]

    gs = make_group_snapshot(ctx, group)
    snaps = [new_snapshot(v) for v in vols]
    model, updates = driver.create_group_snapshot(ctx, gs, snaps)
    assert model == {"status": "available"}
    assert [u["id"] for u in updates] == [s.id for s in snaps]
    with appliance.client() as c:
        shelf_group = c.group_snapshot_show(f"group-snapshot-{gs.id}")
        assert len(shelf_group["snapshots"]) == 3
        for v, u, want in zip(vols, updates, before):
            member = c.snapshot_show(u["provider_id"])
            assert member["share"] == v.provider_id and member["group"] == shelf_group["id"]
            assert digest(appliance.pool / "snapshots" / u["provider_id"]) == want
    # A retried RPC is answered with the group that exists.
    again = driver.create_group_snapshot(ctx, gs, snaps)
    assert again == (model, updates)
    for s, u in zip(snaps, updates):
        s.provider_id = u["provider_id"]

    # Volumes written after the group snapshot; a new group from it has the old content.
    for v in vols:
        write(appliance.volume_file(v.provider_id), 0, b"\xee" * 65536)
    new_group = make_group(ctx, CG_TYPE)
    clones = []
    for s in snaps:
        c = new_volume(size=1)
        c.snapshot_id = s.id
        clones.append(c)
    model, updates = driver.create_group_from_src(
        ctx, new_group, clones, group_snapshot=gs, snapshots=snaps
    )
    assert model is None
    for u, want in zip(updates, before):
        made.append(u["provider_id"])
        assert u["status"] == "available"
        assert digest(appliance.volume_file(u["provider_id"])) == want

    model, updates = driver.delete_group_snapshot(ctx, gs, snaps)
    assert model == {"status": "deleted"}
    assert [u["status"] for u in updates] == ["deleted"] * 3
    with appliance.client() as c:
        assert c.group_snapshot_list() == []
        for v in vols:
            assert c.snapshot_list(share=v.provider_id) == []
    # Cinder retries deletes: already gone is success.
    assert driver.delete_group_snapshot(ctx, gs, snaps)[0] == {"status": "deleted"}

    model, updates = driver.delete_group(ctx, group, vols)
    assert model == {"status": "deleted"}
    assert [u["status"] for u in updates] == ["deleted"] * 3
    with appliance.client() as c:
        ids = {s["id"] for s in c.share_list()}
    assert not ids & {v.provider_id for v in vols}
    assert driver.get_volume_stats(refresh=True)["consistent_group_snapshot_enabled"] is True


def test_plain_groups_are_left_to_cinders_generic_code_with_group_type_lookup_faked(
    appliance, driver, new_volume, new_snapshot, ctx, group_type_lookup_faked
):
    for type_id in (PLAIN_TYPE,):
        group = make_group(ctx, type_id)
        gs = make_group_snapshot(ctx, group)
        with pytest.raises(NotImplementedError):
            driver.create_group(ctx, group)
        with pytest.raises(NotImplementedError):
            driver.create_group_snapshot(ctx, gs, [])
        with pytest.raises(NotImplementedError):
            driver.delete_group_snapshot(ctx, gs, [])
        with pytest.raises(NotImplementedError):
            driver.delete_group(ctx, group, [])
    with appliance.client() as c:
        assert c.group_snapshot_list() == []
