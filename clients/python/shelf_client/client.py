"""The connection: requests out, replies in, matched by id.

A :class:`Client` is one Unix-socket connection to shelfd (docs/protocol.md section 2).
Every incoming frame goes through one reader, :meth:`Client._read_one`, which checks
the reply envelope and files the reply under its request's id. Callers then pick
replies by id (:meth:`Client.wait`), or take whichever comes next
(:meth:`Client.recv`). That single dispatch point is where a future server-initiated
message (an event subscription) would be routed to its subscriber instead of to a
request; see the README.

A client is not thread-safe: use one per thread, or guard it with a lock.
"""

from __future__ import annotations

import collections
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .errors import ConnectionClosed, ProtocolError, ShelfError, error_from_reply
from .framing import (
    DEFAULT_MAX_REPLY,
    DEFAULT_MAX_REQUEST,
    decode_body,
    encode_frame,
    read_frame,
)
from .ops import Operations

#: Where shelfd listens by default (docs/protocol.md section 2).
DEFAULT_SOCKET = "/run/shelf/shelf.sock"

#: Requests kept in flight by :meth:`Client.send_many` and :class:`Pipeline` unless told
#: otherwise; below the server's default ``max_in_flight`` of 64 (section 5).
DEFAULT_DEPTH = 32

#: One request for :meth:`Client.send_many`: ``(op, args)`` or ``(op, args, key)``.
RequestSpec = Union[
    Tuple[str, Optional[Mapping[str, Any]]], Tuple[str, Optional[Mapping[str, Any]], Optional[str]]
]


@dataclass
class Reply:
    """One reply: the id and op of the request it answers, and its outcome.

    Exactly one of ``value`` (the ``ok`` result) and ``error`` is meaningful; use
    :meth:`result` to get the value or raise the error.
    """

    id: int
    op: str
    value: Any = None
    error: Optional[ShelfError] = None

    @property
    def ok(self) -> bool:
        """``True`` when the server answered ``ok``."""
        return self.error is None

    def result(self) -> Any:
        """The ``ok`` result, or raise the :class:`ShelfError` the server answered."""
        if self.error is not None:
            raise self.error
        return self.value


class Client(Operations):
    """A connection to shelfd.

    Args:
        path: the socket (default ``/run/shelf/shelf.sock``).
        timeout: seconds to wait for each reply (and for each write); ``None`` waits
            forever. Mutations can be slow (a snapshot in a pool without reflinks copies
            the volume), so be generous.
        max_request_size: the server's ``max_frame_size``; a request whose body is
            larger is refused here with :class:`FrameTooLarge` before anything is sent.
        max_reply_size: the largest reply body accepted (section 3: at least 64 MiB).
        connect_timeout: keep retrying a socket that is absent or refuses connections
            (shelfd still starting) for this many seconds, with back-off.

    Typed methods (``share_create`` ...) come from :class:`~shelf_client.ops.Operations`
    and return the ``ok`` result as plain dicts and lists, or raise a
    :class:`ShelfError` subclass.
    """

    def __init__(
        self,
        path: str = DEFAULT_SOCKET,
        timeout: Optional[float] = 300.0,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST,
        max_reply_size: int = DEFAULT_MAX_REPLY,
        connect_timeout: float = 0.0,
    ) -> None:
        self.path = str(path)
        self._timeout = timeout
        self.max_request_size = max_request_size
        self.max_reply_size = max_reply_size
        self._next_id = 1
        self._pending: Dict[int, str] = {}
        self._ready: Dict[int, Reply] = {}
        self._events: "collections.deque[Dict[str, Any]]" = collections.deque()
        self._broken: Optional[str] = None
        self._sock = self._connect(connect_timeout)

    # ------------------------------------------------------------------ connection

    def _connect(self, connect_timeout: float) -> socket.socket:
        deadline = time.monotonic() + connect_timeout
        delay = 0.02
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(self.path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except BaseException:
                sock.close()
                raise

    def close(self) -> None:
        """Close the connection. Requests without a reply keep running on the server."""
        self._fail("closed by the client")

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def timeout(self) -> Optional[float]:
        """Seconds to wait for each reply and each write (``None``: forever)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        self._timeout = value
        if self._broken is None:
            self._sock.settimeout(value)

    @property
    def pending(self) -> Tuple[int, ...]:
        """Ids of the requests sent and not yet answered."""
        return tuple(self._pending)

    def _fail(self, reason: str) -> Tuple[int, ...]:
        """Close the socket for good; return the ids whose outcome is now unknown."""
        lost = tuple(self._pending)
        self._pending.clear()
        if self._broken is None:
            self._broken = reason
            try:
                self._sock.close()
            except OSError:
                pass
        return lost

    # ------------------------------------------------------------------ sending

    def send(
        self, op: str, args: Optional[Mapping[str, Any]] = None, *, key: Optional[str] = None
    ) -> int:
        """Send one request without waiting; return its id (pipelining, section 5).

        ``args`` is the argument map (``None`` or empty: no arguments); ``key`` an
        idempotency key (section 7.7). Collect the reply with :meth:`wait` or
        :meth:`recv`.
        """
        if self._broken is not None:
            raise ConnectionClosed(f"connection is closed ({self._broken})")
        request_id = self._next_id
        envelope: Dict[str, Any] = {"id": request_id, "op": op}
        if args:
            envelope["args"] = dict(args)
        if key is not None:
            envelope["key"] = key
        frame = encode_frame(envelope, self.max_request_size)  # may raise FrameTooLarge
        self._next_id += 1
        try:
            self._sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            # A partial write leaves the stream out of step: the connection is done.
            lost = self._fail(f"write failed: {e}") + (request_id,)
            raise ConnectionClosed(f"write to {self.path} failed: {e}", lost) from e
        self._pending[request_id] = op
        return request_id

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes. For testing a server's handling of hostile input only: the
        client does not track anything sent this way."""
        if self._broken is not None:
            raise ConnectionClosed(f"connection is closed ({self._broken})")
        self._sock.sendall(data)

    # ------------------------------------------------------------------ receiving

    def _read_reply_or_event(self) -> Optional[Reply]:
        """Read one frame: an event frame (section 8.28, a map with ``event`` and no
        ``id``) is queued for :meth:`next_event` and gives ``None``; else the reply."""
        item = self._read_frame()
        if isinstance(item, dict) and "event" in item and "id" not in item:
            self._events.append(item["event"])
            return None
        return self._dispatch(item)

    def _read_one(self) -> Reply:
        """Read frames until a reply arrives, queueing events read meanwhile."""
        while True:
            reply = self._read_reply_or_event()
            if reply is not None:
                return reply

    def next_event(self) -> Dict[str, Any]:
        """The next event of this connection's subscription (:meth:`events_subscribe`).
        Replies that arrive meanwhile are kept for :meth:`wait`/:meth:`recv`."""
        while not self._events:
            reply = self._read_reply_or_event()
            if reply is not None:
                self._ready[reply.id] = reply
        return self._events.popleft()

    def _after_job(self, reply: Any, field: str, wait: bool) -> Any:
        """Wait for the job a reply names (a copy on a pool that cannot reflink) and put
        the finished object in the reply; a failed job raises its error."""
        if not (wait and isinstance(reply, dict) and isinstance(reply.get("job"), str)):
            return reply
        return dict(reply, **{field: self.job_result(reply["job"])})

    def job_result(self, job: str, *, timeout: Optional[float] = None) -> Any:
        """Wait for a job; its ``result`` when done, else its error raised as the typed
        :class:`ShelfError` of its code."""
        j = self.job_wait(job, timeout=timeout)
        if j["state"] != "done":
            err = j.get("error") or {}
            raise error_from_reply(
                str(err.get("code", "internal")), str(err.get("message", "")), j["op"]
            )
        return j["result"]

    def job_wait(self, job: str, *, poll: float = 0.2, timeout: Optional[float] = None) -> Any:
        """Poll ``job.show`` until the job ends; its final state (section 8.27)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            j = self.job_show(job)
            if j["state"] != "running":
                return j
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job} still running after {timeout} s")
            time.sleep(poll)

    def image_upload(
        self,
        name: str,
        path: str,
        *,
        chunk_size: Optional[int] = None,
        format: Optional[str] = None,
        checksum: Optional[str] = None,
        pool: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """Upload a local image file in chunks (section 8.26) and start its import;
        returns ``{job, image}``. Chunks default to the frame limit less room for the
        envelope."""
        size = os.path.getsize(path)
        chunk_size = chunk_size or max(4096, min(512 * 1024, self.max_request_size - 4096))
        up = self.image_upload_begin(name, size, format=format, checksum=checksum, pool=pool)
        try:
            with open(path, "rb") as f:
                offset = 0
                while True:
                    data = f.read(chunk_size)
                    if not data:
                        break
                    self.image_upload_chunk(up["upload"], offset, data)
                    offset += len(data)
            return self.image_upload_finish(up["upload"], key=key)
        except BaseException:
            try:
                self.image_upload_abort(up["upload"])
            except Exception:
                pass
            raise

    def _read_frame(self) -> Any:
        """Read and decode one frame: the single reader of the connection."""
        if self._broken is not None:
            raise ConnectionClosed(f"connection is closed ({self._broken})")
        try:
            body = read_frame(self._sock, self.max_reply_size)
        except ConnectionClosed as e:
            raise ConnectionClosed(str(e), self._fail(str(e))) from e
        except (ConnectionResetError, BrokenPipeError) as e:
            raise ConnectionClosed(f"connection reset: {e}", self._fail(str(e))) from e
        except ProtocolError:
            self._fail("the server sent an invalid frame")
            raise
        if body is None:
            lost = self._fail("the server closed the connection")
            raise ConnectionClosed("the server closed the connection", lost)
        try:
            item = decode_body(body)
        except ProtocolError:
            self._fail("the server sent an invalid frame")
            raise
        return item

    def _dispatch(self, item: Any) -> Reply:
        """Check a reply envelope (section 4.3) and tie it to its request."""
        if not isinstance(item, dict) or "id" not in item:
            self._fail("reply is not a map with an id")
            raise ProtocolError(f"reply is not a map with an id: {item!r:.200}")
        has_ok, has_err = "ok" in item, "err" in item
        if has_ok == has_err:
            self._fail("reply without exactly one of ok, err")
            raise ProtocolError(f"reply must hold exactly one of ok and err: {item!r:.200}")
        code, message = "", ""
        if has_err:
            err = item["err"]
            if not (
                isinstance(err, dict)
                and isinstance(err.get("code"), str)
                and isinstance(err.get("message"), str)
            ):
                self._fail("malformed err")
                raise ProtocolError(f"err must be {{code: text, message: text}}: {err!r:.200}")
            code, message = err["code"], err["message"]
        request_id = item["id"]
        if request_id is None:
            return self._request_refused(code, message, has_ok)
        if (
            isinstance(request_id, bool)
            or not isinstance(request_id, int)
            or request_id not in self._pending
        ):
            self._fail("reply to an unknown id")
            raise ProtocolError(f"reply to id {request_id!r}, which no pending request has")
        op = self._pending.pop(request_id)
        if has_err:
            return Reply(request_id, op, error=error_from_reply(code, message, op))
        return Reply(request_id, op, value=item["ok"])

    def _request_refused(self, code: Optional[str], message: Optional[str], has_ok: bool) -> Reply:
        """An ``id: null`` reply (section 4.4): a frame the server could not read as a
        request. With one request pending, it was that one, and the connection stays in
        step. With several, nobody can tell which, so the connection is closed and every
        pending request's outcome is unknown (section 11)."""
        if has_ok:
            self._fail("ok reply with a null id")
            raise ProtocolError("the server sent an ok reply with a null id")
        pending = tuple(self._pending)
        if len(pending) == 1:
            self._pending.clear()
        else:
            self._fail("id-null error with several requests pending")
        raise ProtocolError(
            f"the server could not read a request: {code}: {message}",
            code=code,
            server_message=message,
            pending=pending,
        )

    def _wait_any(self, ids: Set[int]) -> Reply:
        for i in ids:
            if i in self._ready:
                return self._ready.pop(i)
        if not any(i in self._pending for i in ids):
            raise ValueError(f"no pending request has any of the ids {sorted(ids)}")
        while True:
            reply = self._read_one()
            if reply.id in ids:
                return reply
            self._ready[reply.id] = reply

    def wait(self, request_id: int) -> Reply:
        """The reply to the request ``request_id``; replies to other requests that
        arrive first are kept for their own :meth:`wait` or :meth:`recv`."""
        return self._wait_any({request_id})

    def recv(self) -> Reply:
        """The next reply to any request, in the order replies arrived."""
        if self._ready:
            first = next(iter(self._ready))
            return self._ready.pop(first)
        if not self._pending:
            raise ValueError("no request is waiting for a reply")
        return self._read_one()

    # ------------------------------------------------------------------ calling

    def request(
        self, op: str, args: Optional[Mapping[str, Any]] = None, *, key: Optional[str] = None
    ) -> Any:
        """Send one request, wait for its reply, return the result or raise its error."""
        return self.wait(self.send(op, args, key=key)).result()

    def _submit(self, op: str, args: Dict[str, Any], key: Optional[str]) -> Any:
        return self.request(op, args, key=key)

    def send_many(
        self, requests: Iterable[RequestSpec], *, depth: int = DEFAULT_DEPTH
    ) -> List[Reply]:
        """Pipeline ``requests`` with at most ``depth`` in flight; return their replies
        in the order of ``requests``, whatever order they arrived in.

        Error replies do not stop the batch: each :class:`Reply` carries its own error.
        Keep requests that depend on each other out of one batch: the server runs
        pipelined requests in any order (section 5).
        """
        if depth < 1:
            raise ValueError("depth must be at least 1")
        order: List[int] = []
        in_flight: Set[int] = set()
        done: Dict[int, Reply] = {}
        for spec in requests:
            op, args = spec[0], spec[1]
            key = spec[2] if len(spec) > 2 else None
            while len(in_flight) >= depth:
                reply = self._wait_any(in_flight)
                in_flight.discard(reply.id)
                done[reply.id] = reply
            request_id = self.send(op, args, key=key)
            order.append(request_id)
            in_flight.add(request_id)
        while in_flight:
            reply = self._wait_any(in_flight)
            in_flight.discard(reply.id)
            done[reply.id] = reply
        return [done[i] for i in order]

    def pipeline(self, *, depth: int = DEFAULT_DEPTH) -> "Pipeline":
        """A batch of typed calls sent together when the ``with`` block ends::

        with client.pipeline() as p:
            a = p.share_show("vol1")
            b = p.hello()
        a.result(), b.result()
        """
        return Pipeline(self, depth)


@dataclass
class Pending:
    """A request queued in a :class:`Pipeline`; :attr:`reply` is set when it is run."""

    op: str
    args: Dict[str, Any]
    key: Optional[str] = None
    reply: Optional[Reply] = field(default=None, repr=False)

    def result(self) -> Any:
        """The ``ok`` result, or raise the server's error."""
        if self.reply is None:
            raise RuntimeError("the pipeline has not been run yet")
        return self.reply.result()


class Pipeline(Operations):
    """Typed calls recorded, then sent together with :meth:`Client.send_many`.

    Each typed method returns a :class:`Pending` instead of a result. Leaving the
    ``with`` block (without an exception) runs the batch; :meth:`run` does it by hand.
    """

    def __init__(self, client: Client, depth: int = DEFAULT_DEPTH) -> None:
        self.client = client
        self.depth = depth
        self.queued: List[Pending] = []

    def _submit(self, op: str, args: Dict[str, Any], key: Optional[str]) -> Pending:
        pending = Pending(op, args, key)
        self.queued.append(pending)
        return pending

    def run(self) -> Sequence[Reply]:
        """Send every queued request and collect the replies (in queue order)."""
        batch, self.queued = self.queued, []
        replies = self.client.send_many(((p.op, p.args, p.key) for p in batch), depth=self.depth)
        for p, r in zip(batch, replies):
            p.reply = r
        return replies

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.run()
