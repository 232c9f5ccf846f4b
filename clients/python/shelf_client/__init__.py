"""Python client for shelfd's management protocol v1 (docs/protocol.md).

Quick use::

    from shelf_client import Client, NotFound

    with Client("/run/shelf/shelf.sock") as c:
        assert 1 in c.hello()["protocols"]
        share = c.share_create("vol1", 10 << 30, metadata={"owner": "web-1"})["share"]
        try:
            c.share_show("nope")
        except NotFound as e:
            print(e.code, e.message)
"""

from .client import DEFAULT_DEPTH, DEFAULT_SOCKET, Client, Pending, Pipeline, Reply
from .errors import (
    ERROR_CLASSES,
    AlreadyExists,
    Busy,
    ClientError,
    ConnectionClosed,
    FrameTooLarge,
    HasDependents,
    Internal,
    InvalidArgument,
    NoSpace,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ShelfError,
    Tampered,
    Unsupported,
    error_from_reply,
)
from .framing import DEFAULT_MAX_REPLY, DEFAULT_MAX_REQUEST

#: The protocol version this client speaks.
PROTOCOL_VERSION = 1

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "Busy",
    "Client",
    "ClientError",
    "ConnectionClosed",
    "DEFAULT_DEPTH",
    "DEFAULT_MAX_REPLY",
    "DEFAULT_MAX_REQUEST",
    "DEFAULT_SOCKET",
    "ERROR_CLASSES",
    "FrameTooLarge",
    "HasDependents",
    "Internal",
    "InvalidArgument",
    "NoSpace",
    "NotFound",
    "PROTOCOL_VERSION",
    "Pending",
    "PermissionDenied",
    "Pipeline",
    "ProtocolError",
    "Reply",
    "ShelfError",
    "Tampered",
    "Unsupported",
    "error_from_reply",
]
