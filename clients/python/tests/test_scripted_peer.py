"""The client's reply handling against a scripted peer on a Unix socket.

A live shelfd decides itself in which order replies come and never misbehaves, so the
cases here need a peer that follows a script: replies in reverse order (deterministic
out-of-order delivery), an ``id: null`` error with several requests pending, an error
code from a later protocol version, and replies that break the protocol. The peer
speaks the framing of docs/protocol.md section 3; it stands in for the server only in
what a real one cannot be made to do on demand.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from typing import Callable, Iterator, List

import cbor2
import pytest

from shelf_client import Client, ConnectionClosed, Internal, NotFound, ProtocolError
from shelf_client.framing import decode_body, encode_frame, read_frame

Script = Callable[[socket.socket], None]


class Peer:
    """Accept one connection and run ``script`` on it in a thread."""

    def __init__(self, script: Script) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.path = f"{self.dir.name}/peer.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.error: List[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script: Script) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(30)
                script(conn)
        except BaseException as e:  # reported by close()
            self.error.append(e)

    def close(self) -> None:
        self.thread.join(timeout=30)
        self.listener.close()
        self.dir.cleanup()
        assert not self.thread.is_alive(), "the scripted peer hung"
        if self.error:
            raise self.error[0]


@pytest.fixture
def peer() -> Iterator[Callable[[Script], Peer]]:
    made: List[Peer] = []

    def start(script: Script) -> Peer:
        p = Peer(script)
        made.append(p)
        return p

    yield start
    for p in made:
        p.close()


def read_requests(conn: socket.socket, n: int) -> list:
    out = []
    for _ in range(n):
        body = read_frame(conn)
        assert body is not None
        out.append(decode_body(body))
    return out


def reply(conn: socket.socket, item: dict) -> None:
    conn.sendall(encode_frame(item, 1 << 30))


def test_replies_in_reverse_order_are_matched_by_id(peer) -> None:
    def script(conn: socket.socket) -> None:
        reqs = read_requests(conn, 10)
        for r in reversed(reqs):  # last request answered first
            if r["args"]["n"] % 3 == 0:
                reply(
                    conn,
                    {
                        "id": r["id"],
                        "err": {"code": "not_found", "message": f"no {r['args']['n']}"},
                    },
                )
            else:
                reply(conn, {"id": r["id"], "ok": {"echo": r["args"]["n"], "op": r["op"]}})

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        replies = c.send_many([("share.show", {"n": n}) for n in range(10)])
        for n, r in enumerate(replies):
            if n % 3 == 0:
                assert isinstance(r.error, NotFound) and r.error.message == f"no {n}"
            else:
                assert r.result() == {"echo": n, "op": "share.show"}


def test_recv_returns_replies_in_arrival_order(peer) -> None:
    def script(conn: socket.socket) -> None:
        reqs = read_requests(conn, 3)
        for i in (2, 0, 1):
            reply(conn, {"id": reqs[i]["id"], "ok": i})

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        ids = [c.send("hello") for _ in range(3)]
        assert [c.recv().id for _ in range(3)] == [ids[2], ids[0], ids[1]]


def test_id_null_with_several_pending_closes_and_lists_them(peer) -> None:
    def script(conn: socket.socket) -> None:
        read_requests(conn, 3)
        reply(
            conn,
            {
                "id": None,
                "err": {"code": "invalid_argument", "message": "frame is not one valid CBOR item"},
            },
        )
        conn.recv(1)  # wait for the client to hang up

    p = peer(script)
    c = Client(p.path, timeout=30)
    ids = [c.send("hello") for _ in range(3)]
    with pytest.raises(ProtocolError) as e:
        c.wait(ids[0])
    assert e.value.code == "invalid_argument" and set(e.value.pending) == set(ids)
    with pytest.raises(ConnectionClosed):
        c.hello()
    c.close()


def test_unknown_error_code_is_internal_and_keeps_the_code(peer) -> None:
    def script(conn: socket.socket) -> None:
        (r,) = read_requests(conn, 1)
        reply(
            conn,
            {
                "id": r["id"],
                "err": {"code": "quota_exceeded", "message": "later code"},
                "hint": "ignored",
            },
        )

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        with pytest.raises(Internal) as e:
            c.share_create("v", 512)
        assert e.value.code == "quota_exceeded" and e.value.op == "share.create"


def test_unknown_result_keys_are_kept_not_refused(peer) -> None:
    def script(conn: socket.socket) -> None:
        (r,) = read_requests(conn, 1)
        reply(
            conn, {"ok": {"server": "shelfd", "protocols": [1, 2], "new_key": True}, "id": r["id"]}
        )

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        assert c.hello()["new_key"] is True


@pytest.mark.parametrize(
    "bad",
    [
        {"id": 1},  # neither ok nor err
        {"id": 1, "ok": 1, "err": {"code": "busy", "message": ""}},  # both
        {"id": 99, "ok": 1},  # an id nobody sent
        {"id": 1, "err": "busy"},  # err not a map
        [1, 2],  # not a map
    ],
)
def test_replies_that_break_the_protocol(peer, bad) -> None:
    def script(conn: socket.socket) -> None:
        read_requests(conn, 1)
        reply(conn, bad)

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        with pytest.raises(ProtocolError):
            c.hello()
        with pytest.raises(ConnectionClosed):
            c.hello()


def test_trailing_bytes_in_a_reply_are_refused(peer) -> None:
    def script(conn: socket.socket) -> None:
        read_requests(conn, 1)
        body = cbor2.dumps({"id": 1, "ok": None}) + b"\x00"
        conn.sendall(len(body).to_bytes(4, "big") + body)

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        with pytest.raises(ProtocolError):
            c.hello()


def test_end_of_stream_reports_the_unanswered_requests(peer) -> None:
    def script(conn: socket.socket) -> None:
        reqs = read_requests(conn, 3)
        reply(conn, {"id": reqs[1]["id"], "ok": "done"})
        # then hang up with two requests unanswered

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        ids = [c.send("share.delete", {"share": f"v{i}"}) for i in range(3)]
        assert c.wait(ids[1]).result() == "done"
        with pytest.raises(ConnectionClosed) as e:
            c.wait(ids[0])
        assert set(e.value.pending) == {ids[0], ids[2]}


def test_cut_frame_is_a_broken_connection(peer) -> None:
    def script(conn: socket.socket) -> None:
        read_requests(conn, 1)
        conn.sendall(b"\x00\x00\x01\x00\xa2")  # announces 256 bytes, sends 1

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        with pytest.raises(ConnectionClosed):
            c.hello()


def test_deep_reply_decodes(peer) -> None:
    """Section 3: no nesting limit of 32 on replies (a tree of 10 001 generations is
    40 000 levels deep)."""
    depth = 40_010

    def script(conn: socket.socket) -> None:
        (r,) = read_requests(conn, 1)
        body = b"\xa2\x62id" + cbor2.dumps(r["id"]) + b"\x62ok" + b"\x81" * depth + b"\x80"
        conn.sendall(len(body).to_bytes(4, "big") + body)

    p = peer(script)
    with Client(p.path, timeout=30) as c:
        v = c.tree()
        levels = 0
        while v:
            v = v[0]
            levels += 1
        assert levels == depth


def test_timeout_before_a_reply_leaves_the_connection_usable(peer) -> None:
    go = threading.Event()

    def script(conn: socket.socket) -> None:
        (r,) = read_requests(conn, 1)
        assert go.wait(30), "the test never let the reply go"
        reply(conn, {"id": r["id"], "ok": "late"})

    p = peer(script)
    with Client(p.path, timeout=0.2) as c:
        request_id = c.send("hello")
        with pytest.raises(TimeoutError):
            c.wait(request_id)
        assert c.pending == (request_id,)
        go.set()
        c.timeout = 30
        assert c.wait(request_id).result() == "late"
