"""Every frame of wire protocol v1 as a msgspec Struct.

Client frames and server frames are two tagged unions (`type` is the tag), so
one decoder per direction validates a whole frame in a single pass. Field
names are snake_case here and camelCase on the wire. Optional fields use
``UNSET`` so that an absent field stays absent when a frame is re-encoded.

Schema evolution follows msgspec's rules: new fields get defaults, the type of
an existing field never changes (the protocol may add, never change: protocol/SPEC.md).

The ``data`` of a signal is relayed as sent (protocol/SPEC.md §3): it
is kept as the plain object the client sent, every field of it, known or
not. `SdpData` and `CandidateData` are only the views the server checks it
against: what it needs to be a signal at all, and what it logs.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "DATA_MAX_DEPTH",
    "ID_MAX_LENGTH",
    "SESSION_ID_MAX_LENGTH",
    "USER_ID_MAX_LENGTH",
    "Answer",
    "Auth",
    "CandidateData",
    "ClientFrame",
    "ConnectionState",
    "Error",
    "ErrorCode",
    "IceCandidate",
    "IceCandidateInit",
    "IceServer",
    "JoinSession",
    "LeaveSession",
    "Offer",
    "RelayedAnswer",
    "RelayedIceCandidate",
    "RelayedOffer",
    "SdpData",
    "ServerFrame",
    "SessionDescription",
    "SessionJoined",
    "SessionLeft",
    "UserJoined",
    "UserLeft",
    "Welcome",
    "frame_tags",
]

ID_MAX_LENGTH = 64
"""protocol/SPEC.md §1: a frame's ``id`` is a string of at most 64 characters."""
USER_ID_MAX_LENGTH = 128
"""Longest ``userId`` accepted (Firebase's ``sub`` limit)."""
SESSION_ID_MAX_LENGTH = 128
"""Longest ``sessionId`` accepted."""

FrameId = Annotated[str, Meta(max_length=ID_MAX_LENGTH)]
UserId = Annotated[str, Meta(min_length=1, max_length=USER_ID_MAX_LENGTH)]
SessionId = Annotated[str, Meta(min_length=1, max_length=SESSION_ID_MAX_LENGTH)]
ResumeToken = Annotated[str, Meta(min_length=1, max_length=128)]
"""A ``welcome``'s ``resumeToken`` as a client sends it back (opaque; ours are shorter)."""
DATA_MAX_DEPTH = 32
"""Deepest nesting of objects and arrays accepted inside a signal's ``data``."""

ErrorCode = Literal[
    "bad-frame",
    "unauthorized",
    "forbidden",
    "not-in-session",
    "peer-not-found",
    "session-full",
    "rate-limited",
    "too-large",
    "replaced",
    "internal",
]
"""The error codes of protocol/SPEC.md §6."""


class _Object(msgspec.Struct, rename="camel", omit_defaults=True, gc=False):
    """A nested JSON object of the protocol."""


class _Frame(
    msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True, kw_only=True, gc=False
):
    """Base of every frame: an object with a string ``type``."""


# --- payloads -----------------------------------------------------------------


class SessionDescription(_Object):
    """An RTCSessionDescriptionInit: ``{"type": "offer", "sdp": "v=0…"}``."""

    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: str | UnsetType = UNSET


class IceCandidateInit(_Object):
    """An RTCIceCandidateInit."""

    candidate: str | UnsetType = UNSET
    sdp_mid: str | UnsetType | None = UNSET
    sdp_m_line_index: Annotated[int, Meta(ge=0, le=65535)] | UnsetType | None = UNSET
    username_fragment: str | UnsetType | None = UNSET


class SdpData(_Object):
    """``data`` of ``offer`` and ``answer``."""

    sdp: SessionDescription


class CandidateData(_Object):
    """``data`` of ``ice-candidate``; ``None`` is the end-of-candidates marker."""

    candidate: IceCandidateInit | None


_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


def _unportable(value: Any, depth: int) -> tuple[str, str] | None:
    """Why ``value`` cannot reach every receiver unchanged: ``(path, reason)``, or None.

    A signal may go out in JSON, in MessagePack, or both (its receivers pick
    their encodings), so ``data`` must be a value both carry alike: string
    keys, no binary or extension types, finite floats, 64-bit integers.
    Strings, booleans, None and 64-bit integers are checked inline: they are
    nearly all of a real ``data``, and this runs for every relayed signal.
    """
    kind = type(value)
    if kind is dict or kind is list:
        if depth >= DATA_MAX_DEPTH:
            return "", f"nested deeper than {DATA_MAX_DEPTH} levels"
        is_dict = kind is dict
        for key, item in value.items() if is_dict else enumerate(value):
            if is_dict and type(key) is not str:
                return "", "object keys must be strings"
            item_kind = type(item)
            if item_kind is str or item_kind is bool or item is None:
                continue
            if item_kind is int and _INT_MIN <= item <= _INT_MAX:
                continue  # a candidate's sdpMLineIndex: no call for it
            problem = _unportable(item, depth + 1)
            if problem is not None:
                where = f".{key}" if is_dict else f"[{key}]"
                return where + problem[0], problem[1]
        return None
    if kind is int:
        return None if _INT_MIN <= value <= _INT_MAX else ("", "integer out of 64-bit range")
    if kind is float:
        return None if math.isfinite(value) else ("", "numbers must be finite")
    if kind is str or kind is bool or value is None:
        return None
    return "", f"{kind.__name__} values cannot be relayed (not JSON)"


SignalData = Annotated[
    dict[str, Any],
    Meta(
        description="Relayed as sent: every field, known or not, reaches the receiver unchanged.",
        extra_json_schema={"$ref": "#/$defs/SdpData"},
    ),
]
CandidateSignalData = Annotated[
    dict[str, Any],
    Meta(
        description="Relayed as sent: every field, known or not, reaches the receiver unchanged.",
        extra_json_schema={"$ref": "#/$defs/CandidateData"},
    ),
]


def _check_data(data: dict[str, Any], view: type[SdpData] | type[CandidateData]) -> None:
    """Raise `ValueError` (a bad frame) unless ``data`` can be relayed as sent."""
    problem = _unportable(data, 1)
    if problem is not None:
        raise ValueError(f"{problem[1]} - at `$.data{problem[0]}`")
    try:
        msgspec.convert(data, view)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc).replace("`$", "`$.data")) from None


class IceServer(_Object):
    """One entry of ``iceServers`` (an RTCIceServer)."""

    urls: str | list[str]
    username: str | UnsetType = UNSET
    credential: str | UnsetType = UNSET


# --- client -> server -----------------------------------------------------------


class Auth(_Frame, tag="auth"):
    """First frame of a connection: who the client is, and (v1.1) the
    ``resumeToken`` of the connection it takes over (protocol/SPEC.md §10)."""

    user_id: UserId
    token: str | UnsetType = UNSET
    resume: ResumeToken | UnsetType = UNSET
    id: FrameId | UnsetType = UNSET


class JoinSession(_Frame, tag="join-session"):
    """Join a session; answered by ``session-joined``."""

    session_id: SessionId
    id: FrameId | UnsetType = UNSET


class LeaveSession(_Frame, tag="leave-session"):
    """Leave a session; answered by ``session-left``."""

    session_id: SessionId
    id: FrameId | UnsetType = UNSET


class Offer(_Frame, tag="offer"):
    """An SDP offer for ``to``. A client-supplied ``from`` is ignored."""

    to: UserId
    session_id: SessionId
    data: SignalData
    """Relayed as sent; it must hold ``sdp`` (`SdpData`)."""
    id: FrameId | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_data(self.data, SdpData)


class Answer(_Frame, tag="answer"):
    """An SDP answer for ``to``."""

    to: UserId
    session_id: SessionId
    data: SignalData
    """Relayed as sent; it must hold ``sdp`` (`SdpData`)."""
    id: FrameId | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_data(self.data, SdpData)


class IceCandidate(_Frame, tag="ice-candidate"):
    """A trickled ICE candidate for ``to``."""

    to: UserId
    session_id: SessionId
    data: CandidateSignalData
    """Relayed as sent; it must hold ``candidate`` (`CandidateData`)."""
    id: FrameId | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_data(self.data, CandidateData)


class ConnectionState(_Frame, tag="connection-state"):
    """The client's RTCPeerConnection state; logged and counted, not relayed."""

    session_id: SessionId
    state: Annotated[str, Meta(max_length=32)]
    id: FrameId | UnsetType = UNSET


ClientFrame = Auth | JoinSession | LeaveSession | Offer | Answer | IceCandidate | ConnectionState
"""Any frame a client may send."""


# --- server -> client -----------------------------------------------------------


class Welcome(_Frame, tag="welcome"):
    """Answer to a successful ``auth``.

    v1.1 (protocol/SPEC.md §10): ``resumeToken`` and ``resumeWindowMs`` when
    resume is on; ``resumed`` answers an ``auth`` that asked to resume, with
    ``sessions`` (the sessions it is back in) when it did.
    """

    user_id: str
    connection_id: str
    ice_servers: list[IceServer]
    resume_token: str | UnsetType = UNSET
    resume_window_ms: int | UnsetType = UNSET
    resumed: bool | UnsetType = UNSET
    sessions: list[str] | UnsetType = UNSET


class SessionJoined(_Frame, tag="session-joined"):
    """Reply to ``join-session``: the other users already in the session."""

    session_id: str
    participants: list[str]
    reply_to: str | UnsetType = UNSET


class SessionLeft(_Frame, tag="session-left"):
    """Reply to ``leave-session``."""

    session_id: str
    reply_to: str | UnsetType = UNSET


class UserJoined(_Frame, tag="user-joined"):
    """Another user took a seat in one of your sessions."""

    session_id: str
    user_id: str


class UserLeft(_Frame, tag="user-left"):
    """Another user left one of your sessions (or disconnected)."""

    session_id: str
    user_id: str


class RelayedOffer(_Frame, tag="offer"):
    """An ``offer`` as relayed, ``from`` set by the server."""

    from_: str = msgspec.field(name="from")
    to: str
    session_id: str
    data: SignalData
    id: str | UnsetType = UNSET


class RelayedAnswer(_Frame, tag="answer"):
    """An ``answer`` as relayed, ``from`` set by the server."""

    from_: str = msgspec.field(name="from")
    to: str
    session_id: str
    data: SignalData
    id: str | UnsetType = UNSET


class RelayedIceCandidate(_Frame, tag="ice-candidate"):
    """An ``ice-candidate`` as relayed, ``from`` set by the server."""

    from_: str = msgspec.field(name="from")
    to: str
    session_id: str
    data: CandidateSignalData
    id: str | UnsetType = UNSET


class Error(_Frame, tag="error"):
    """Something went wrong; ``replyTo`` names the frame that caused it."""

    code: ErrorCode
    message: str
    reply_to: str | UnsetType = UNSET
    retry_after_ms: int | UnsetType = UNSET
    session_id: str | UnsetType = UNSET


ServerFrame = (
    Welcome
    | SessionJoined
    | SessionLeft
    | UserJoined
    | UserLeft
    | RelayedOffer
    | RelayedAnswer
    | RelayedIceCandidate
    | Error
)
"""Any frame the server may send."""


def frame_tags() -> tuple[list[str], list[str]]:
    """The ``type`` of every client frame and of every server frame."""
    return (
        [kind.__struct_config__.tag for kind in get_args(ClientFrame)],
        [kind.__struct_config__.tag for kind in get_args(ServerFrame)],
    )
