"""Images, jobs, events and metadata changes (sections 8.26-8.29) against a live shelfd."""

from __future__ import annotations

import hashlib
import os
import tempfile

import pytest

from shelf_client import Client, InvalidArgument, NotFound

MiB = 1 << 20


def _raw_image(size: int = 4 * MiB) -> str:
    fd, path = tempfile.mkstemp(prefix="shelf-py-image-", suffix=".raw")
    with os.fdopen(fd, "wb") as f:
        f.truncate(size)
        f.seek(MiB)
        f.write(b"shelf" * 1000)
    return path


def test_upload_import_and_share_from_image(daemon) -> None:
    path = _raw_image()
    try:
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        with daemon.client() as c, daemon.client() as watcher:
            sub = watcher.events_subscribe()
            assert sub["gap"] is False and isinstance(sub["epoch"], str)
            started = c.image_upload("base", path, format="raw", checksum=f"sha256:{digest}")
            job = c.job_wait(started["job"], timeout=60)
            assert job["state"] == "done", job
            assert job["result"]["size"] == 4 * MiB
            img = c.image_show("base")
            assert img["checksum"] == f"sha256:{digest}" and img["state"] == "available"
            made = c.share_create("from-base", 8 * MiB, from_image="base")
            assert made["share"]["size"] == 8 * MiB
            with pytest.raises(InvalidArgument):
                c.share_create("too-small", MiB, from_image="base")
            assert [i["name"] for i in c.image_list()] == ["base"]
            assert any(j["id"] == started["job"] for j in c.job_list())
            # The watcher sees the job end and the share appear, in order.
            kinds = []
            while "object.created" not in kinds or "job.done" not in kinds:
                e = watcher.next_event()
                assert e["epoch"] == sub["epoch"]
                kinds.append(e["kind"])
            c.image_delete("base")
            assert c.share_show("from-base")["size"] == 8 * MiB
    finally:
        os.unlink(path)


def test_jobs_errors_and_metadata(client: Client) -> None:
    with pytest.raises(NotFound):
        client.job_show("no-such-job")
    with pytest.raises(NotFound):
        client.job_cancel("no-such-job")
    with pytest.raises(InvalidArgument):
        client.image_import("x", "relative/path")
    client.share_create("meta", MiB, metadata={"a": "1"})
    r = client.share_set_metadata("meta", metadata={"b": "2"}, remove=["a"])
    assert r["share"]["metadata"] == {"b": "2"} and r["changed"] is True
