"""Roles (docs/protocol.md section 2.1): a reader may read and nothing else, and every
refusal is ``permission_denied`` and lands in the audit log. The reader is a client
process running as the user ``nobody``, connecting through the socket's group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

CHILD = r"""
import json, sys
from shelf_client import Client, PermissionDenied
out = {}
with Client(sys.argv[1], timeout=60) as c:
    out["hello"] = c.hello()["server"]
    out["share_list"] = c.share_list()
    out["tree"] = c.tree()
    for op, fn in [
        ("share.create", lambda: c.share_create("from-reader", 1 << 20)),
        ("share.delete", lambda: c.share_delete("kept")),
        ("verify", lambda: c.verify()),
        ("audit.list", lambda: c.audit_list()),
    ]:
        try:
            fn()
            out[op] = "allowed"
        except PermissionDenied as e:
            out[op] = [e.code, e.op]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_reader_role_reads_and_is_refused_the_rest(start_daemon) -> None:
    d = start_daemon('[access]\nsocket_group = "nogroup"\nreader_users = ["nobody"]\n')
    os.chmod(d.base, 0o755)  # let nobody reach the socket; the socket itself is 0660
    os.chmod(os.path.dirname(d.socket), 0o755)
    with d.client() as admin:
        kept = admin.share_create("kept", 1 << 20)["share"]
    try:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, d.socket],
            user="nobody",
            group="nogroup",
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
    except PermissionError:
        pytest.skip(f"{sys.executable} cannot be run by nobody (run-tests uses /usr/bin/python3)")
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    assert out["hello"] == "shelfd"
    assert [s["id"] for s in out["share_list"]] == [kept["id"]]
    assert [n["name"] for n in out["tree"]] == ["kept"]
    for op in ("share.create", "share.delete", "verify", "audit.list"):
        assert out[op] == ["permission_denied", op], (op, out)

    with d.client() as admin:
        assert admin.share_show("kept")["id"] == kept["id"]
        assert admin.share_list(name="from-reader") == []
        deadline = time.monotonic() + 30  # the audit log is group-committed (8.25)
        refused = []
        while time.monotonic() < deadline:
            refused = [
                e for e in admin.audit_list(uid=65534) if e["outcome"] == "permission_denied"
            ]
            if len(refused) >= 4:
                break
            time.sleep(0.1)
        assert sorted(e["op"] for e in refused) == [
            "audit.list",
            "share.create",
            "share.delete",
            "verify",
        ]
        assert all(e["role"] != "admin" for e in refused)
