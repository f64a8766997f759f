"""One exception tree for the protocol's error codes, and the close codes.

::

    SignalingError (code)            -> an `error` frame, the connection stays
    ├── BadFrame          bad-frame
    ├── Unauthorized      unauthorized
    ├── Forbidden         forbidden
    ├── NotInSession      not-in-session
    ├── PeerNotFound      peer-not-found
    ├── SessionFull       session-full
    ├── RateLimited       rate-limited   (retry_after_ms)
    ├── TooLarge          too-large
    ├── Replaced          replaced       (session_id)
    └── InternalError     internal

Errors that end a connection are not exceptions of this tree: they are a
`CloseCode` passed to the transport.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from msgspec import UNSET, UnsetType

from .frames import Error, ErrorCode

__all__ = [
    "BadFrame",
    "CloseCode",
    "Forbidden",
    "InternalError",
    "NotInSession",
    "PeerNotFound",
    "RateLimited",
    "Replaced",
    "SessionFull",
    "SignalingError",
    "TooLarge",
    "Unauthorized",
    "error_class",
]


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (protocol/SPEC.md §7)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007
    TOO_LARGE = 1009
    INTERNAL = 1011
    SLOW_CONSUMER = 1013
    """Our addition: the client did not read its frames fast enough."""
    UNAUTHORIZED = 4401
    ORIGIN_NOT_ALLOWED = 4403
    TOO_MANY_CONNECTIONS = 4409
    """Our addition: the user has ``SIGNALING_MAX_CONNECTIONS_PER_USER`` open already."""
    TIMEOUT = 4408
    FLOODING = 4429


class SignalingError(Exception):
    """A rule was broken; the sender gets an ``error`` frame with ``code``."""

    code: ClassVar[ErrorCode] = "internal"

    def __init__(
        self,
        message: str,
        *,
        session_id: str | UnsetType = UNSET,
        retry_after_ms: int | UnsetType = UNSET,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.session_id = session_id
        self.retry_after_ms = retry_after_ms

    def to_frame(self, reply_to: str | UnsetType = UNSET) -> Error:
        """The ``error`` frame that reports this error."""
        return Error(
            code=self.code,
            message=self.message,
            reply_to=reply_to,
            retry_after_ms=self.retry_after_ms,
            session_id=self.session_id,
        )


class BadFrame(SignalingError):
    """Not JSON/MessagePack, not an object, unknown type, missing/ill-typed field."""

    code = "bad-frame"


class Unauthorized(SignalingError):
    """Authentication missing or refused."""

    code = "unauthorized"


class Forbidden(SignalingError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"


class NotInSession(SignalingError):
    """The sender is not in the session it names."""

    code = "not-in-session"


class PeerNotFound(SignalingError):
    """``to`` is not in the session."""

    code = "peer-not-found"


class SessionFull(SignalingError):
    """The session has reached its participant cap."""

    code = "session-full"


class RateLimited(SignalingError):
    """The sender is over its rate limit; retry after ``retry_after_ms``."""

    code = "rate-limited"


class TooLarge(SignalingError):
    """A frame or field is over its size limit."""

    code = "too-large"


class Replaced(SignalingError):
    """A newer connection of the same user took this seat in ``session_id``."""

    code = "replaced"


class InternalError(SignalingError):
    """The server failed; the frame was not processed."""

    code = "internal"


_BY_CODE: dict[str, type[SignalingError]] = {
    cls.code: cls
    for cls in (
        BadFrame,
        Unauthorized,
        Forbidden,
        NotInSession,
        PeerNotFound,
        SessionFull,
        RateLimited,
        TooLarge,
        Replaced,
        InternalError,
    )
}


def error_class(code: str) -> type[SignalingError]:
    """The exception class for an error ``code`` (unknown codes map to the base)."""
    return _BY_CODE.get(code, SignalingError)
