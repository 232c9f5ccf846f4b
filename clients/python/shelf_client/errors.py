"""Errors raised by the client.

Two families, kept apart on purpose:

* :class:`ShelfError` and its subclasses are **answers** from the server: an error reply
  ``{id, err: {code, message}}`` to one request (docs/protocol.md section 6). Branch on
  the class (or on ``code``), never on ``message``.
* :class:`ClientError`'s other subclasses (:class:`ProtocolError`,
  :class:`ConnectionClosed`, :class:`FrameTooLarge`) mean the conversation itself went
  wrong: a frame the server could not read, a reply that breaks the protocol, a broken
  connection.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Type


class ClientError(Exception):
    """Base class of every error this package raises."""


class ShelfError(ClientError):
    """An error reply from shelfd to one request.

    Attributes:
        code: the stable wire code exactly as the server sent it (for an unknown code,
            the unknown text; the class is then :class:`Internal`, as section 6
            requires).
        message: the server's text for humans. Not stable: do not parse it.
        op: the operation of the request this answers (``"share.create"``...).
    """

    #: The wire code this class stands for (``None`` on the base class).
    CODE: Optional[str] = None

    def __init__(self, code: str, message: str, op: Optional[str] = None) -> None:
        super().__init__(code, message, op)
        self.code = code
        self.message = message
        self.op = op

    def __str__(self) -> str:
        where = f"{self.op}: " if self.op else ""
        return f"{where}{self.code}: {self.message}"


class NotFound(ShelfError):
    """``not_found``: no such pool, share, snapshot, export (or deleted meanwhile)."""

    CODE = "not_found"


class AlreadyExists(ShelfError):
    """``already_exists``: an object of that name exists with other parameters."""

    CODE = "already_exists"


class InvalidArgument(ShelfError):
    """``invalid_argument``: malformed request or a broken rule (name, size, ...)."""

    CODE = "invalid_argument"


class HasDependents(ShelfError):
    """``has_dependents``: snapshots, exports or attachments depend on the object."""

    CODE = "has_dependents"


class NoSpace(ShelfError):
    """``no_space``: the pool's capacity policy or the filesystem refused the space."""

    CODE = "no_space"


class Busy(ShelfError):
    """``busy``: the object is in use or in transition; retry later with back-off."""

    CODE = "busy"


class Unsupported(ShelfError):
    """``unsupported``: not available here (for example an unknown ``op``)."""

    CODE = "unsupported"


class PermissionDenied(ShelfError):
    """``permission_denied``: the peer's role does not allow the operation."""

    CODE = "permission_denied"


class Tampered(ShelfError):
    """``tampered``: the share's volume was replaced through its NFS export; nothing was done."""

    CODE = "tampered"


class Internal(ShelfError):
    """``internal``: a fault inside shelfd, and every code this client does not know."""

    CODE = "internal"


#: Wire code to class, for the stable codes of protocol v1 (docs/protocol.md section 6).
ERROR_CLASSES: Dict[str, Type[ShelfError]] = {
    cls.CODE: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        HasDependents,
        NoSpace,
        Busy,
        Unsupported,
        PermissionDenied,
        Tampered,
        Internal,
    )
}


def error_from_reply(code: str, message: str, op: Optional[str] = None) -> ShelfError:
    """Build the exception for an error reply; an unknown code becomes :class:`Internal`
    (keeping the code the server sent in ``code``)."""
    cls = ERROR_CLASSES.get(code, Internal)
    return cls(code, message, op)


class ProtocolError(ClientError):
    """The server's reply breaks the protocol, or the server could not read a request.

    The second case is an ``id: null`` error reply (docs/protocol.md section 4.4): the
    server refused a frame before it could find its id. ``code`` and ``message`` then
    carry the server's error; ``pending`` lists the ids of the requests that were
    waiting for a reply at that moment (one of them was refused, and gets no other
    reply).
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        server_message: Optional[str] = None,
        pending: Sequence[int] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.server_message = server_message
        self.pending = tuple(pending)


class ConnectionClosed(ClientError, ConnectionError):
    """The connection broke or was closed.

    ``pending`` lists the ids of requests sent without a reply: their outcome is
    **unknown** (the server runs what it has read to completion even when the client is
    gone). See docs/protocol.md section 11, "Reconnecting".
    """

    def __init__(self, message: str, pending: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.pending = tuple(pending)


class FrameTooLarge(ClientError, ValueError):
    """A request would exceed the maximum frame size; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"request body of {size} bytes is larger than the maximum frame size of "
            f"{limit} bytes; nothing was sent"
        )
        self.size = size
        self.limit = limit
