"""Every operation of docs/protocol.md section 8 that runs without tgtd or exportfs,
against a live shelfd, through the typed methods."""

from __future__ import annotations

import uuid

import pytest

from shelf_client import (
    AlreadyExists,
    Client,
    HasDependents,
    Internal,
    InvalidArgument,
    NoSpace,
    NotFound,
    ShelfError,
    Unsupported,
)

MiB = 1 << 20


def test_hello_reports_protocol_1_and_features(client: Client) -> None:
    h = client.hello()
    assert h["server"] == "shelfd"
    assert 1 in h["protocols"]
    for feature in ("pipelining", "share.clone", "tree", "share.metadata"):
        assert feature in h["features"]
    assert isinstance(h["version"], str) and h["version"]
    node = h["node"]
    assert set(node) == {"id", "name"} and node["name"]
    assert str(uuid.UUID(node["id"])) == node["id"]
    assert client.hello()["node"] == node


def test_pools(client: Client) -> None:
    pools = client.pool_list()
    assert [p["name"] for p in pools] == ["default"]
    p = client.pool_show("default")
    assert p["kind"] == "file"
    assert p["size"] >= p["free"] > 0
    with pytest.raises(NotFound) as e:
        client.pool_show("nope")
    assert e.value.code == "not_found" and e.value.op == "pool.show"


def test_share_lifecycle(client: Client, name) -> None:
    vol = name("vol")
    made = client.share_create(vol, 4 * MiB, metadata={"owner": "web-1"})
    assert made["changed"] is True
    share = made["share"]
    assert (share["name"], share["size"], share["sparse"], share["state"]) == (
        vol,
        4 * MiB,
        True,
        "available",
    )
    assert share["metadata"] == {"owner": "web-1"}
    assert share["origin_snapshot"] is None and share["origin_share"] is None

    # Idempotent by name: the same request again answers the same share, unchanged.
    again = client.share_create(vol, 4 * MiB, metadata={"owner": "web-1"})
    assert again["changed"] is False and again["share"]["id"] == share["id"]
    with pytest.raises(AlreadyExists):
        client.share_create(vol, 8 * MiB)

    assert client.share_show(vol)["id"] == share["id"]
    assert client.share_show(share["id"], pool="default")["name"] == vol
    assert [s["id"] for s in client.share_list(name=vol)] == [share["id"]]
    assert [s["name"] for s in client.share_list(id=share["id"], pool="default")] == [vol]
    assert client.share_list(pool="no-such-pool") == []

    grown = client.share_resize(vol, 8 * MiB)
    assert grown["changed"] is True and grown["share"]["size"] == 8 * MiB
    same = client.share_resize(share["id"], 8 * MiB)
    assert same["changed"] is False
    with pytest.raises(InvalidArgument):
        client.share_resize(vol, 4 * MiB)  # grow only

    gone = client.share_delete(vol)
    assert gone == {"deleted": share["id"], "snapshots_deleted": 0, "changed": True}
    with pytest.raises(NotFound):
        client.share_delete(vol)
    with pytest.raises(NotFound):
        client.share_show(share["id"])


def test_preallocated_share(client: Client, name) -> None:
    vol = name("thick")
    share = client.share_create(vol, MiB, sparse=False, multiattach=True)["share"]
    assert share["sparse"] is False and share["multiattach"] is True
    client.share_delete(share["id"])


def test_snapshots_clones_and_tree(client: Client, name, daemon) -> None:
    vol, snap, copy = name("origin"), name("daily"), name("copy")
    share = client.share_create(vol, 2 * MiB)["share"]
    daemon.volume_path(share["id"]).write_bytes(b"before" * 1000)

    taken = client.snapshot_create(vol, snap)
    assert taken["changed"] is True
    s = taken["snapshot"]
    assert (s["name"], s["share"], s["share_name"], s["size"]) == (snap, share["id"], vol, 2 * MiB)
    assert client.snapshot_create(vol, snap)["changed"] is False

    assert client.snapshot_show(snap, share=vol)["id"] == s["id"]
    assert client.snapshot_show(s["id"])["name"] == snap
    with pytest.raises(NotFound):
        client.snapshot_show(snap)  # a name needs its share
    assert [x["id"] for x in client.snapshot_list(share=vol)] == [s["id"]]
    assert s["id"] in [x["id"] for x in client.snapshot_list(pool="default")]
    assert client.snapshot_list(pool="no-such-pool") == []

    # The clone starts from the snapshot's content, and is independent of the origin.
    daemon.volume_path(share["id"]).write_bytes(b"after!" * 1000)
    cloned = client.share_clone(snap, copy, share=vol, metadata={"role": "test"})
    assert cloned["changed"] is True
    c = cloned["share"]
    assert (c["origin_snapshot"], c["origin_share"], c["metadata"]) == (
        s["id"],
        share["id"],
        {"role": "test"},
    )
    assert daemon.volume_path(c["id"]).read_bytes()[:6] == b"before"
    assert client.share_clone(s["id"], copy, metadata={"role": "test"})["changed"] is False
    with pytest.raises(AlreadyExists):
        client.share_clone(s["id"], copy)  # other metadata

    roots = {n["id"]: n for n in client.tree(pool="default")}
    node = roots[share["id"]]
    assert [x["name"] for x in node["snapshots"]] == [snap]
    assert [x["id"] for x in node["snapshots"][0]["clones"]] == [c["id"]]
    assert c["id"] not in roots
    assert client.tree(pool="no-such-pool") == []

    with pytest.raises(HasDependents):
        client.share_delete(vol)
    gone = client.share_delete(vol, recursive=True)
    assert gone["snapshots_deleted"] == 1
    survivor = client.share_show(copy)
    assert survivor["origin_snapshot"] == s["id"]  # lineage kept after the origin is gone
    # 8.14: a clone whose origin snapshot is gone is a root of the tree.
    assert survivor["id"] in [n["id"] for n in client.tree(pool="default")]
    with pytest.raises(NotFound):
        client.snapshot_show(s["id"])
    client.share_delete(copy)


def test_snapshot_delete_by_id_and_by_name(client: Client, name) -> None:
    vol = name("snaps")
    client.share_create(vol, MiB)
    a = client.snapshot_create(vol, "a")["snapshot"]
    client.snapshot_create(vol, "b")
    assert client.snapshot_delete(a["id"]) == {"deleted": a["id"], "changed": True}
    assert client.snapshot_delete("b", share=vol, pool="default")["changed"] is True
    with pytest.raises(NotFound):
        client.snapshot_delete(a["id"])
    assert client.snapshot_list(share=vol) == []
    client.share_delete(vol)


def test_deep_clone_chain_decodes_past_32_levels(client: Client, name) -> None:
    """Section 3: replies are not limited to 32 levels; eight generations are 36."""
    root = name("gen0")
    client.share_create(root, MiB)
    current = root
    made = [root]
    for gen in range(1, 11):
        client.snapshot_create(current, "s")
        nxt = name(f"gen{gen}")
        client.share_clone("s", nxt, share=current)
        made.append(nxt)
        current = nxt
    node = next(n for n in client.tree() if n["name"] == root)
    depth = 0
    while node["snapshots"]:
        node = node["snapshots"][0]["clones"][0]
        depth += 1
    assert depth == 10 and node["name"] == current
    for vol in reversed(made):
        client.share_delete(vol, recursive=True)


def test_error_codes_map_to_classes(client: Client, name) -> None:
    vol = name("errs")
    client.share_create(vol, MiB)
    cases = [
        (lambda: client.share_show(name("absent")), NotFound, "not_found"),
        (lambda: client.share_create(vol, 2 * MiB), AlreadyExists, "already_exists"),
        (lambda: client.share_create(name("odd"), 1000), InvalidArgument, "invalid_argument"),
        (lambda: client.share_create("-bad-name", MiB), InvalidArgument, "invalid_argument"),
        (
            lambda: client.share_create(name("m"), MiB, metadata={"a=b": "x"}),
            InvalidArgument,
            "invalid_argument",
        ),
        # 3.1: an integer sent as a float is refused even without a fraction.
        (
            lambda: client.call("share.create", name=name("f"), size=1048576.0),
            InvalidArgument,
            "invalid_argument",
        ),
        # 4.2: unknown arguments are refused, not ignored.
        (
            lambda: client.call("share.show", share=vol, colour="red"),
            InvalidArgument,
            "invalid_argument",
        ),
        # 7.2 and the pool's over-subscription ratio of 1.0: 1 PiB is more than the disk.
        (lambda: client.share_create(name("huge"), 1 << 50), NoSpace, "no_space"),
        (lambda: client.call("share.explode"), Unsupported, "unsupported"),
    ]
    client.snapshot_create(vol, "keep")
    cases.append((lambda: client.share_delete(vol), HasDependents, "has_dependents"))
    for fn, cls, code in cases:
        with pytest.raises(ShelfError) as e:
            fn()
        assert type(e.value) is cls, (code, e.value)
        assert e.value.code == code and e.value.message
    # The connection survived every refusal.
    assert client.share_delete(vol, recursive=True)["changed"] is True


def test_exports_and_attachments_without_drivers(client: Client, name) -> None:
    """The export family, up to where a driver would be needed (none runs here)."""
    vol = name("exp")
    absent = name("absent")
    client.share_create(vol, MiB)
    assert client.export_list() == [] or all(e["share_name"] != vol for e in client.export_list())
    assert client.export_list(share=vol) == []
    assert client.attachment_list(share=vol) == []
    with pytest.raises(NotFound):
        client.export_show(share=vol, protocol="nfs")
    with pytest.raises(NotFound):
        client.export_show(export="no-such-export")
    with pytest.raises(NotFound):
        client.export_create(absent, "nfs", clients=["10.0.0.0/8"])
    with pytest.raises(NotFound):
        client.export_delete(share=absent, protocol="nfs")
    with pytest.raises(NotFound):
        client.share_attach(
            absent, {"host": "compute-1", "initiator": "iqn.1993-08.org.debian:01:abc"}
        )
    with pytest.raises(NotFound):
        client.share_detach(absent, {"host": "compute-1"}, protocol="nfs")
    with pytest.raises(InvalidArgument):
        client.export_create(vol, "carrier-pigeon")
    client.share_delete(vol)


def test_reconcile_and_verify(client: Client, name) -> None:
    vol = name("ver")
    client.share_create(vol, MiB)
    report = client.reconcile()
    assert isinstance(report["findings"], list) and isinstance(report["checked"], dict)
    v = client.verify()
    assert v["clean"] is True, v["differences"]
    assert v["checked"]["shares"] >= 1
    client.share_delete(vol)


def test_verify_reports_a_missing_volume(start_daemon) -> None:
    d = start_daemon()
    with d.client() as c:
        share = c.share_create("lost", MiB)["share"]
        d.volume_path(share["id"]).unlink()
        v = c.verify()
        assert v["clean"] is False
        assert any(
            x["kind"] == "missing" and share["id"] in x["object"] + x["detail"]
            for x in v["differences"]
        ), v


def test_audit_list(client: Client, name) -> None:
    vol = name("aud")
    client.share_create(vol, MiB, key=name("key"))
    with pytest.raises(NotFound):
        client.share_delete(name("never"))
    client.share_delete(vol)

    def entries():
        return [e for e in client.audit_list(limit=1000) if vol in e["target"]]

    # Entries are group-committed shortly after the reply (8.25): poll, bounded.
    import time

    deadline = time.monotonic() + 30
    while len(entries()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    mine = entries()
    assert [e["op"] for e in mine] == ["share.delete", "share.create"]  # newest first
    assert all(e["outcome"] == "ok" and e["role"] == "admin" and e["uid"] == 0 for e in mine)
    assert mine[1]["key"] is not None
    first = min(e["seq"] for e in mine)
    later = client.audit_list(since=first - 1, op="share.create")
    assert later and all(e["op"] == "share.create" and e["seq"] >= first for e in later)
    assert [e["seq"] for e in later] == sorted(e["seq"] for e in later)  # oldest first
    with pytest.raises(InvalidArgument):
        client.audit_list(limit=0)


def test_idempotency_keys(client: Client, name) -> None:
    vol = name("idem")
    key = name("k")
    made = client.share_create(vol, MiB, key=key)
    # The same key, op and args: the first answer again (changed stays true).
    assert client.share_create(vol, MiB, key=key) == made
    # The same key with other args is a client bug.
    with pytest.raises(InvalidArgument):
        client.share_create(vol, 2 * MiB, key=key)

    del_key = name("del")
    first = client.share_delete(vol, key=del_key)
    # Without the key a repeated delete is not_found; with it, the first answer.
    assert client.share_delete(vol, key=del_key) == first
    with pytest.raises(NotFound):
        client.share_delete(vol)
    # Refusals a retry would get again are kept too.
    nf_key = name("nf")
    with pytest.raises(NotFound):
        client.share_delete(name("absent"), key=nf_key)
    with pytest.raises(NotFound):
        client.share_delete(name("absent"), key=nf_key)
    with pytest.raises(InvalidArgument):
        client.share_delete(vol, key="has space")


def test_unknown_error_code_is_internal() -> None:
    from shelf_client import error_from_reply

    e = error_from_reply("quota_exceeded", "a code from a later server", "share.create")
    assert type(e) is Internal and e.code == "quota_exceeded" and e.op == "share.create"
    assert type(error_from_reply("internal", "x")) is Internal


def test_largest_metadata_the_spec_allows(start_daemon) -> None:
    # Section 7.3: at most 64 entries, values of 4096 bytes, and 32768 bytes in all as JSON.
    d = start_daemon(max_frame_size=1 << 20)
    meta = {f"key-{i:02d}-" + "k" * 240: "v" * 4096 for i in range(7)}
    with d.client() as c:
        try:
            made = c.share_create("fat", MiB, metadata=meta)
            assert made["share"]["metadata"] == meta
        except InvalidArgument as e:
            # A pool on ext4 keeps a file's extended attributes in one block (about 4 KiB):
            # the server says so instead of failing half-way.
            assert "extended attributes" in e.message, e
        too_big = dict(meta, **{"key-99": "v" * 4096})
        with pytest.raises(InvalidArgument):
            c.share_create("fatter", MiB, metadata=too_big)
        assert c.verify()["clean"] is True
