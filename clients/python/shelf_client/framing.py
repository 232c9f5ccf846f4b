"""Framing (docs/protocol.md section 3): a 4-byte big-endian length, then exactly one
CBOR data item of that many bytes.

These functions know nothing about requests or replies; :mod:`shelf_client.client`
builds on them.
"""

from __future__ import annotations

import io
import socket
import struct
from typing import Any, Optional

import cbor2

from .errors import ConnectionClosed, FrameTooLarge, ProtocolError

#: The server's default ``max_frame_size`` (1 MiB): the largest request body it reads.
DEFAULT_MAX_REQUEST = 1 << 20

#: The largest reply body accepted. Section 3 asks clients to accept at least 64 MiB.
DEFAULT_MAX_REPLY = 64 << 20

#: Nesting accepted in replies. Section 3 forbids a limit of 32 on replies (``tree``
#: nests 4 levels per clone generation, and the server shows up to 10 001 generations).
REPLY_MAX_DEPTH = 100_000

_HEADER = struct.Struct(">I")


def encode_frame(item: Any, max_size: int = DEFAULT_MAX_REQUEST) -> bytes:
    """Encode ``item`` as one frame (header and body).

    Raises :class:`FrameTooLarge` when the body is longer than ``max_size`` (a frame of
    exactly ``max_size`` bytes is allowed, as the server allows it).
    """
    body = cbor2.dumps(item)
    if len(body) > max_size:
        raise FrameTooLarge(len(body), max_size)
    return _HEADER.pack(len(body)) + body


def _recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    """Read exactly ``n`` bytes, or raise :class:`ConnectionClosed`."""
    chunks = []
    got = 0
    while got < n:
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except socket.timeout as e:
            # Part of the frame is consumed: the stream cannot be resynchronised.
            raise ConnectionClosed(f"timed out inside a frame {what} ({got} of {n} bytes)") from e
        if not chunk:
            raise ConnectionClosed(f"connection closed inside a frame {what} ({got} of {n} bytes)")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, max_size: int = DEFAULT_MAX_REPLY) -> Optional[bytes]:
    """Read one frame's body. ``None`` means a clean end of stream between frames.

    Raises :class:`ConnectionClosed` when the stream ends (or times out) inside a frame,
    and :class:`ProtocolError` for a zero-length or oversized frame. A timeout before the
    first byte of a frame propagates as :class:`TimeoutError` (``socket.timeout``); the
    stream is then still in step and may be read again.
    """
    try:
        first = sock.recv(_HEADER.size)
    except socket.timeout as e:  # an alias of TimeoutError only from Python 3.10
        raise TimeoutError("no reply within the timeout") from e
    if not first:
        return None
    if len(first) < _HEADER.size:
        first += _recv_exact(sock, _HEADER.size - len(first), "header")
    header = first
    (length,) = _HEADER.unpack(header)
    if length == 0:
        raise ProtocolError("the server sent an empty frame")
    if length > max_size:
        raise ProtocolError(
            f"the server sent a frame of {length} bytes, over this client's limit of {max_size}"
        )
    return _recv_exact(sock, length, "body")


def decode_body(body: bytes) -> Any:
    """Decode a frame body: exactly one CBOR item, no trailing bytes, deep nesting
    allowed."""
    stream = io.BytesIO(body)
    try:
        try:
            decoder = cbor2.CBORDecoder(stream, max_depth=REPLY_MAX_DEPTH)
        except TypeError:  # cbor2 before 6 has no max_depth (and no such limit)
            decoder = cbor2.CBORDecoder(stream)
        item = decoder.decode()
    except (cbor2.CBORDecodeError, RecursionError) as e:
        raise ProtocolError(f"the server sent a frame that is not valid CBOR: {e}") from e
    if stream.tell() != len(body):
        raise ProtocolError(
            f"the server sent {len(body) - stream.tell()} trailing bytes after the data item"
        )
    return item
