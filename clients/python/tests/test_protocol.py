"""Framing, frame-size limits, id-null replies and pipelining (docs/protocol.md sections
3, 4.4 and 5), against a live shelfd whose ``max_frame_size`` is 65536."""

from __future__ import annotations

import socket
import tempfile

import cbor2
import pytest

from shelf_client import (
    Client,
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    NotFound,
    ProtocolError,
    Reply,
)
from shelf_client.framing import decode_body, encode_frame, read_frame

MiB = 1 << 20


def test_hello_frame_is_the_worked_example() -> None:
    """Section 10: the 24 bytes of ``{"id": 1, "op": "hello", "args": {}}``."""
    want = "00 00 00 14 a3 62 69 64 01 62 6f 70 65 68 65 6c 6c 6f 64 61 72 67 73 a0"
    assert encode_frame({"id": 1, "op": "hello", "args": {}}).hex(" ") == want


def _raw(daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(daemon.socket)
    return sock


def test_raw_worked_example_exchange(daemon) -> None:
    """The exact bytes of section 10 get a reply that decodes as section 10 says."""
    with _raw(daemon) as sock:
        sock.sendall(bytes.fromhex("0000000e a2 626964 01 626f70 6568656c6c6f".replace(" ", "")))
        reply = decode_body(read_frame(sock))
    assert reply["id"] == 1 and 1 in reply["ok"]["protocols"]


def _list_args(body_size: int, request_id: int) -> dict:
    """share.list arguments (a long name filter) whose request body is exactly
    ``body_size`` bytes. The filter matches nothing, so the reply is ``[]``."""

    def size(n: int) -> int:
        return len(cbor2.dumps({"id": request_id, "op": "share.list", "args": {"name": "x" * n}}))

    n = body_size - size(0)
    while size(n) > body_size:  # the text's length header grows with it
        n -= 1
    assert size(n) == body_size, "no name length gives exactly this body size"
    return {"name": "x" * n}


def test_frame_of_exactly_the_maximum_is_accepted(daemon) -> None:
    with daemon.client() as c:
        assert c.request("share.list", _list_args(daemon.max_frame_size, request_id=1)) == []


def test_oversized_request_is_refused_before_sending(daemon) -> None:
    with daemon.client() as c:
        args = _list_args(daemon.max_frame_size + 1, request_id=1)
        with pytest.raises(FrameTooLarge) as e:
            c.request("share.list", args)
        assert e.value.size == daemon.max_frame_size + 1
        assert c.pending == ()
        # Nothing was sent, so the connection is still in step, and the id was not used.
        first = c.send("hello")
        assert first == 1 and c.wait(first).ok


def test_oversized_request_refused_by_the_server(daemon) -> None:
    """A client that believes the limit is higher: the server answers id null,
    invalid_argument, and closes the connection (section 3)."""
    with daemon.client(max_request_size=16 * MiB) as c:
        with pytest.raises(ProtocolError) as e:
            c.request("share.list", _list_args(daemon.max_frame_size + 1, request_id=1))
        assert e.value.code == "invalid_argument" and e.value.pending == (1,)
        with pytest.raises(ConnectionClosed):
            c.hello()


def _deep(levels: int) -> list:
    item: list = []
    for _ in range(levels - 1):
        item = [item]
    return item


def test_request_too_deep_gets_an_id_null_reply_and_the_connection_stays(daemon) -> None:
    """Section 3: more than 32 levels makes the frame invalid; the reply has id null
    (4.4). With one request outstanding the client attributes it to that request."""
    with daemon.client() as c:
        with pytest.raises(ProtocolError) as e:
            c.request("share.create", {"name": "deep", "size": MiB, "metadata": {"k": _deep(40)}})
        assert e.value.code == "invalid_argument" and e.value.pending == (1,)
        assert "nest" in (e.value.server_message or "")
        assert c.hello()["server"] == "shelfd"  # still open, still in step


def test_zero_length_frame_is_refused_and_the_connection_stays(daemon) -> None:
    with _raw(daemon) as sock:
        sock.sendall(b"\x00\x00\x00\x00")
        reply = decode_body(read_frame(sock))
        assert reply["id"] is None and reply["err"]["code"] == "invalid_argument"
        sock.sendall(encode_frame({"id": 2, "op": "hello"}))
        assert decode_body(read_frame(sock))["id"] == 2


def test_pipelined_burst_matches_replies_by_id(daemon, name) -> None:
    """A burst of 60 mixed requests on one connection (under max_in_flight 64), read
    back with recv() in arrival order: every reply goes to its own request."""
    with daemon.client() as c:
        vols = [name(f"burst{i}") for i in range(12)]
        for reply in c.send_many([("share.create", {"name": v, "size": MiB}) for v in vols]):
            assert reply.result()["changed"] is True
        # A slow first request: a snapshot copied in full (the scratch pool cannot
        # reflink) of a share with 32 MiB of data.
        slow = c.share_create(name("slow"), 32 * MiB, sparse=False)["share"]
        daemon.volume_path(slow["id"]).write_bytes(b"\xa5" * 32 * MiB)
        sent = {c.send("snapshot.create", {"share": slow["id"], "name": "s"}): ("snap", slow["id"])}
        for i in range(59):
            if i % 5 == 0:
                sent[c.send("hello")] = ("hello", None)
            elif i % 5 == 1:
                sent[c.send("share.show", {"share": f"absent-{i}"})] = ("absent", None)
            else:
                v = vols[i % len(vols)]
                sent[c.send("share.show", {"share": v})] = ("show", v)
        arrived = []
        while c.pending:
            r = c.recv()
            arrived.append(r.id)
            kind, what = sent[r.id]
            if kind == "snap":
                assert r.result()["snapshot"]["share"] == what
            elif kind == "hello":
                assert r.result()["server"] == "shelfd"
            elif kind == "absent":
                assert isinstance(r.error, NotFound) and r.op == "share.show"
            else:
                assert r.result()["name"] == what
        assert sorted(arrived) == sorted(sent)
        print(
            "arrival order:", arrived, "in order" if arrived == sorted(arrived) else "out of order"
        )
        for v in vols:
            c.share_delete(v)
        c.share_delete(slow["id"], recursive=True)


def test_send_many_bounds_depth_and_keeps_request_order(daemon, name) -> None:
    """300 requests at most 8 in flight; replies come back in request order."""
    with daemon.client() as c:
        vol = name("depth")
        c.share_create(vol, MiB)
        reqs = []
        for i in range(300):
            reqs.append(
                ("share.show", {"share": vol})
                if i % 2
                else ("share.show", {"share": f"{vol}-x{i}"})
            )
        replies = c.send_many(reqs, depth=8)
        assert [r.id for r in replies] == sorted(r.id for r in replies)
        for i, r in enumerate(replies):
            if i % 2:
                assert r.result()["name"] == vol
            else:
                assert isinstance(r.error, NotFound)
        c.share_delete(vol)


def test_pipeline_helper_with_typed_calls(daemon, name) -> None:
    with daemon.client() as c:
        vol = name("pipe")
        c.share_create(vol, MiB)
        with c.pipeline(depth=4) as p:
            h = p.hello()
            s = p.share_show(vol)
            missing = p.share_show(name("absent"))
            bad = p.share_create(name("odd"), 1000)
            t = p.tree(pool="default")
            anything = p.call("share.list", name=vol)
        assert h.result()["server"] == "shelfd"
        assert s.result()["name"] == vol
        with pytest.raises(NotFound):
            missing.result()
        with pytest.raises(InvalidArgument):
            bad.result()
        assert any(n["name"] == vol for n in t.result())
        assert [x["name"] for x in anything.result()] == [vol]
        assert isinstance(s.reply, Reply)
        c.share_delete(vol)


def test_wait_keeps_other_replies_for_later(daemon) -> None:
    with daemon.client() as c:
        ids = [c.send("hello") for _ in range(5)]
        last = c.wait(ids[-1])
        assert last.id == ids[-1] and last.ok
        rest = {c.wait(i).id for i in ids[:-1]}
        assert rest == set(ids[:-1]) and c.pending == ()


def test_closed_connection_reports_unknown_outcomes(daemon) -> None:
    c = daemon.client()
    c.close()
    with pytest.raises(ConnectionClosed):
        c.hello()


def test_connect_to_an_absent_socket_fails() -> None:
    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(FileNotFoundError):
            Client(f"{d}/none.sock", connect_timeout=0.2)
