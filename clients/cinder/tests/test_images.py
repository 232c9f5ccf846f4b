"""Volumes from Glance images through shelf's image cache (``clone_image``).

Glance is the one faked component (``fake_glance.py``); the image is a real qcow2 made
with ``qemu-img convert``, imported by the real shelfd (checksum, conversion, reflinks),
and the volumes are checked in their files in the pool.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from oslo_config import cfg

from cinder import exception

from appliance import GiB, HANG
from fake_glance import FakeGlanceImageService
from shelf_cinder.images import cache_name

MiB = 1 << 20
MARK_OFFSET = 5 * MiB + 4096
MARK = b"written-into-the-glance-image" * 100


def qcow2(directory: Path, name: str, virtual_size: int, offset: int) -> Path:
    """A qcow2 image of ``virtual_size`` bytes holding MARK at ``offset``."""
    raw = directory / f"{name}.raw"
    with open(raw, "wb") as f:
        f.truncate(virtual_size)
        f.seek(offset)
        f.write(MARK)
    out = directory / f"{name}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
        check=True,
        capture_output=True,
        timeout=HANG,
    )
    raw.unlink()
    return out


def read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.fixture
def glance(appliance, tmp_path):
    """The fake image service; Cinder's temporary files go to the test's directory,
    and the cached bases the test made are deleted when it ends."""
    cfg.CONF.set_override("image_conversion_dir", str(tmp_path / "conversion"))
    service = FakeGlanceImageService()
    yield service
    cfg.CONF.clear_override("image_conversion_dir")
    with appliance.client() as c:
        for image_id in service.downloads:
            try:
                c.image_delete(cache_name(image_id), pool="default")
            except Exception:
                pass


def cached(appliance, image_id):
    with appliance.client() as c:
        return [i for i in c.image_list(pool="default") if i["name"] == cache_name(image_id)]


def test_two_volumes_from_one_image_import_it_once_and_hold_its_data(
    appliance, driver, ctx, glance, new_volume, made, tmp_path
):
    image_id = glance.add(qcow2(tmp_path, "small", 64 * MiB, MARK_OFFSET), "qcow2")
    meta = glance.show(ctx, image_id)
    volumes = []
    for size in (1, 2):
        vol = new_volume(size=size)
        update, cloned = driver.clone_image(ctx, vol, (None, None), meta, glance)
        assert cloned is True
        made.append(update["provider_id"])
        assert set(update) == {"provider_id"}
        vol.update(update)
        volumes.append(vol)

    assert glance.downloads[image_id] == 1
    images = cached(appliance, image_id)
    assert len(images) == 1
    image = images[0]
    assert image["state"] == "available" and image["size"] == 64 * MiB
    assert image["source_format"] == "qcow2" and image["checksum"] == f"md5:{meta['checksum']}"
    with appliance.client() as c:
        assert c.image_show(image["id"])["shares_made"] == 2
        for vol in volumes:
            share = c.share_show(vol.provider_id)
            assert share["name"] == vol.name and share["size"] == vol.size * GiB
            assert share["metadata"]["cinder.volume_id"] == vol.id
    for vol in volumes:
        path = appliance.volume_file(vol.provider_id)
        assert path.stat().st_size == vol.size * GiB
        assert read(path, MARK_OFFSET, len(MARK)) == MARK
        assert read(path, 0, 4096) == bytes(4096)

    # Independent volumes: writing one changes neither the other nor the cached base.
    with open(appliance.volume_file(volumes[0].provider_id), "r+b") as f:
        f.seek(MARK_OFFSET)
        f.write(b"X" * len(MARK))
    assert read(appliance.volume_file(volumes[1].provider_id), MARK_OFFSET, len(MARK)) == MARK
    third = new_volume(size=1)
    update, cloned = driver.clone_image(ctx, third, (None, None), meta, glance)
    made.append(update["provider_id"])
    assert cloned and read(appliance.volume_file(update["provider_id"]), MARK_OFFSET, 8) == MARK[:8]
    assert glance.downloads[image_id] == 1

    # The volume is an ordinary volume for the rest of the driver.
    driver.delete_volume(volumes[0])
    with appliance.client() as c:
        assert c.image_show(image["id"])["state"] == "available"


def test_volume_smaller_than_the_image_falls_back_to_cinder(
    appliance, driver, ctx, glance, new_volume, tmp_path
):
    big = qcow2(tmp_path, "big", GiB + 512 * MiB, GiB + MARK_OFFSET)
    image_id = glance.add(big, "qcow2")
    meta = glance.show(ctx, image_id)
    vol = new_volume(size=1)
    # Glance's metadata does not always carry virtual_size: shelf learns it on import.
    assert driver.clone_image(ctx, vol, (None, None), meta, glance) == (None, False)
    with appliance.client() as c:
        assert [s for s in c.share_list(pool="default") if s["name"] == vol.name] == []
    assert [i["size"] for i in cached(appliance, image_id)] == [GiB + 512 * MiB]

    # With virtual_size known, the driver does not even look at the image.
    other = glance.add(big, "qcow2")
    meta = dict(glance.show(ctx, other), virtual_size=GiB + 512 * MiB)
    assert driver.clone_image(ctx, new_volume(size=1), (None, None), meta, glance) == (None, False)
    assert glance.downloads[other] == 0 and cached(appliance, other) == []


def test_bad_checksum_fails_cleanly_and_leaves_no_image(
    appliance, driver, ctx, glance, new_volume, tmp_path
):
    image_id = glance.add(qcow2(tmp_path, "bad", 64 * MiB, MARK_OFFSET), "qcow2", checksum="0" * 32)
    meta = glance.show(ctx, image_id)
    vol = new_volume(size=1)
    with pytest.raises(exception.ImageUnacceptable, match="checksum"):
        driver.clone_image(ctx, vol, (None, None), meta, glance)
    assert glance.downloads[image_id] == 1
    assert cached(appliance, image_id) == []
    with appliance.client() as c:
        assert [s for s in c.share_list(pool="default") if s["name"] == vol.name] == []
        assert not [j for j in c.job_list() if j["state"] == "running"]
    assert list((tmp_path / "conversion").iterdir()) == []
    assert [p.name for p in (appliance.pool / "images").iterdir() if p.name.startswith(".")] == []
