"""Volumes from Glance images through shelf's image cache (docs/images.md).

Cinder asks a driver first whether it can make a volume from an image itself
(``clone_image``); only when the driver answers ``(None, False)`` does it create a blank
volume and write the image into it over an attachment (``copy_image_to_volume``). shelf
can do better: the image is imported once into the pool's image cache, as a raw base
named ``glance-<image id>``, and every volume made from it is ``share.create
{from_image}``, a reflink of that base grown to the volume's size. The second volume from
an image neither downloads it from Glance nor converts it again.

The driver answers ``(None, False)`` (so Cinder uses its generic path) only where shelf
cannot help: an encrypted volume (the cached base is plain raw data), a disk format
shelf does not import (``iso``, ``ami``, ``ploop``...), or an image larger than the
volume. docs/cinder.md explains why ``copy_image_to_volume`` keeps Cinder's
generic implementation.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

from oslo_log import log as logging

from cinder import exception
from cinder.image import image_utils

from shelf_client import AlreadyExists, ClientError, InvalidArgument, NotFound

LOG = logging.getLogger(__name__)

#: Bytes in one Cinder gigabyte.
GiB = 1 << 30
#: Glance ``disk_format`` -> the format shelf's import is told (never left to probing:
#: a "raw" image whose bytes look like qcow2 must not be read as qcow2).
SHELF_FORMATS = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vdi": "vdi",
    "vhdx": "vhdx",
    "vhd": "vpc",
    "qed": "qed",
}
#: Seconds between two looks at an image another request is importing.
POLL = 0.5


def cache_name(image_id: str) -> str:
    """The name of a Glance image's base in shelf's cache: one per image and pool."""
    return f"glance-{image_id}"


def glance_checksum(image_meta: Dict[str, Any]) -> Optional[str]:
    """The checksum shelf should verify the download against: Glance's ``checksum``
    (md5), or ``os_hash_value`` when its algorithm is one shelf knows (sha256)."""
    if image_meta.get("checksum"):
        return f"md5:{image_meta['checksum']}"
    if image_meta.get("os_hash_algo") == "sha256" and image_meta.get("os_hash_value"):
        return f"sha256:{image_meta['os_hash_value']}"
    return None


class ImageCacheMixin:
    """``clone_image`` for the shelf drivers (mixed into ``ShelfBaseDriver``, whose
    ``_call``, ``_client``, ``_pool``, ``_metadata`` and ``configuration`` it uses)."""

    def clone_image(
        self,
        context: Any,
        volume: Any,
        image_location: Any,
        image_meta: Dict[str, Any],
        image_service: Any,
    ) -> Tuple[Optional[Dict[str, Any]], bool]:
        """Make ``volume`` a reflink of the image's cached base, importing the image
        into the cache first if it is not there. ``({"provider_id": ...}, True)`` when
        done; ``(None, False)`` when shelf cannot help and Cinder should fall back."""
        if volume.obj_attr_is_set("encryption_key_id") and volume.encryption_key_id:
            return None, False
        if image_meta.get("disk_format") not in SHELF_FORMATS:
            LOG.info(
                "image %s is %s; Cinder's generic path",
                image_meta["id"],
                image_meta.get("disk_format"),
            )
            return None, False
        size = volume.size * GiB
        virtual = image_meta.get("virtual_size")
        if virtual and int(virtual) > size:
            LOG.info(
                "image %s (%s bytes) is larger than volume %s", image_meta["id"], virtual, volume.id
            )
            return None, False
        image = self._cached_image(context, image_meta, image_service)
        if image["size"] > size:
            LOG.info(
                "image %s is larger than volume %s; Cinder's generic path",
                image_meta["id"],
                volume.id,
            )
            return None, False
        share = self._call(
            "share_create",
            volume.name,
            size,
            pool=self._pool,
            multiattach=bool(getattr(volume, "multiattach", False)),
            metadata=dict(self._metadata(volume), **{"cinder.image_id": image_meta["id"]}),
            from_image=image["id"],
            key=f"cinder:clone_image:{volume.id}",
        )["share"]
        return {"provider_id": share["id"]}, True

    def _cached_image(
        self, context: Any, image_meta: Dict[str, Any], image_service: Any
    ) -> Dict[str, Any]:
        """The ``available`` cached base of a Glance image, imported now if absent.
        An import another request started meanwhile is waited for, not repeated."""
        name = cache_name(image_meta["id"])
        deadline = time.monotonic() + self.configuration.shelf_timeout
        while True:
            try:
                image = self._call("image_show", name, pool=self._pool)
            except NotFound:
                image = self._import_image(context, name, image_meta, image_service)
            if image is not None and image["state"] == "available":
                return image
            if time.monotonic() > deadline:
                raise exception.VolumeBackendAPIException(
                    data=f"shelf image {name} is still being imported"
                )
            time.sleep(POLL)

    def _import_image(
        self, context: Any, name: str, image_meta: Dict[str, Any], image_service: Any
    ) -> Optional[Dict[str, Any]]:
        """Download the image from Glance into a temporary file (Cinder's
        ``image_conversion_dir``), upload it to shelfd with Glance's checksum, and wait
        for the import job. ``None`` when another request's import of the same image
        got there first (the caller then waits for that one)."""
        image_id = image_meta["id"]
        with image_utils.temporary_file(prefix="shelf-glance-") as path:
            with open(path, "wb") as f:
                image_service.download(context, image_id, f)
            try:
                with self._client() as c:
                    started = c.image_upload(
                        name,
                        path,
                        format=SHELF_FORMATS[image_meta["disk_format"]],
                        checksum=glance_checksum(image_meta),
                        pool=self._pool,
                    )
                    return c.job_result(
                        started["job"], timeout=self.configuration.shelf_timeout
                    )
            except AlreadyExists:
                return None
            except InvalidArgument as e:
                # The import refused the image itself (checksum mismatch, bad format).
                raise exception.ImageUnacceptable(
                    image_id=image_id, reason=f"shelf import of {name}: {e}"
                ) from e
            except (ClientError, OSError) as e:
                raise exception.VolumeBackendAPIException(
                    data=f"shelf image upload of {image_id}: {e}"
                ) from e
