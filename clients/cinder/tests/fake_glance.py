"""A stand-in for Cinder's ``GlanceImageService``: the one faked component of the suite.

Glance (with Keystone and a database behind it) cannot run on this machine, so the
image tests hand ``clone_image`` this object instead. It has only the two methods of
``cinder.image.glance.GlanceImageService`` the driver may use, with the same signatures
and behaviour: ``show(context, image_id)`` returns the image's metadata as Cinder
translates it (``id``, ``size``, ``checksum``, ``disk_format``, ...), and
``download(context, image_id, data=None)`` writes the image's bytes into the file object
``data`` (or returns the chunks when ``data`` is None). Both raise Cinder's
``ImageNotFound`` for an unknown id. It counts downloads, so a test can see that a
cached image is not fetched again.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from cinder import exception

CHUNK = 64 * 1024


class FakeGlanceImageService:
    """Images served from local files, as Glance's v2 API would describe them."""

    def __init__(self) -> None:
        self._images: Dict[str, Dict[str, Any]] = {}
        self._files: Dict[str, Path] = {}
        #: image id -> how many times its data was downloaded.
        self.downloads: Dict[str, int] = {}

    def add(self, path: Path, disk_format: str, checksum: Optional[str] = None) -> str:
        """Register a file as a new image; its id. ``checksum`` defaults to the file's
        real md5 (what Glance records at upload)."""
        image_id = str(uuid.uuid4())
        data = path.read_bytes()
        self._files[image_id] = path
        self._images[image_id] = {
            "id": image_id,
            "name": path.name,
            "status": "active",
            "size": len(data),
            "checksum": checksum or hashlib.md5(data).hexdigest(),
            "disk_format": disk_format,
            "container_format": "bare",
            "properties": {},
        }
        self.downloads[image_id] = 0
        return image_id

    def show(self, context: Any, image_id: str) -> Dict[str, Any]:
        if image_id not in self._images:
            raise exception.ImageNotFound(image_id=image_id)
        return dict(self._images[image_id])

    def download(self, context: Any, image_id: str, data: Any = None) -> Optional[Iterator[bytes]]:
        if image_id not in self._files:
            raise exception.ImageNotFound(image_id=image_id)
        self.downloads[image_id] += 1
        chunks = self._chunks(self._files[image_id])
        if data is None:
            return chunks
        for chunk in chunks:
            data.write(chunk)
        return None

    @staticmethod
    def _chunks(path: Path) -> Iterator[bytes]:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    return
                yield chunk
