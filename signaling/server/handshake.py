"""What both WebSocket paths decide at the upgrade: origin and encoding."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..codec import CLIENT_CODECS, JSON_SUBPROTOCOL
from .origins import origin_matches

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..codec import Codec
    from ..frames import ClientFrame

__all__ = [
    "Refusal",
    "cap_key",
    "check_upgrade",
    "client_ip",
    "negotiate",
    "origin_allowed",
    "origin_refusal",
]


@dataclass(frozen=True)
class Refusal:
    """An upgrade we refuse, answered as HTTP ``status`` with a JSON body."""

    status: int
    error: str
    message: str


def client_ip(
    peer: str,
    forwarded_for: Iterable[str],
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> str:
    """The client's address: ``peer``, or from ``X-Forwarded-For`` if ``peer`` is trusted.

    The chain is read from the right, skipping trusted proxies; the first
    untrusted hop is the client. Anything unparsable means the header is not
    believed and ``peer`` is used.
    """
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_ip(hop):
            return peer
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def cap_key(ip: str) -> str:
    """What the per-IP cap counts: the address, or for IPv6 its /64.

    One IPv6 host usually owns a whole /64, so counting single addresses
    would let one client take the cap many times over.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _trusted(
    address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def origin_allowed(
    origin: str | None, allowed: tuple[str, ...], *, allow_missing: bool = True
) -> bool:
    """Whether ``origin`` is allowed (an empty list allows every origin).

    ``allowed`` holds the setting's entries as `signaling.server.origins`
    normalized them; case, a default port and ``*.`` subdomains are matched
    there. A request without ``Origin`` (native apps, servers) passes when
    ``allow_missing``; browsers always send one.
    """
    if origin is None or origin == "":
        return allow_missing
    if not allowed or "*" in allowed:
        return True
    return origin_matches(origin, allowed)


def origin_refusal(
    origin: str | None, allowed_origins: tuple[str, ...], *, allow_missing_origin: bool
) -> Refusal | None:
    """The 403 for an ``Origin`` that `origin_allowed` refuses, or None: the one rule
    for every request that opens or continues a session (upgrades and polling)."""
    if origin_allowed(origin, allowed_origins, allow_missing=allow_missing_origin):
        return None
    if not origin:
        return Refusal(403, "origin-not-allowed", "a request without Origin is not allowed")
    return Refusal(403, "origin-not-allowed", f"origin {origin!r} is not allowed")


def negotiate(
    offered: Iterable[str],
    origin: str | None,
    allowed_origins: tuple[str, ...],
    *,
    allow_missing_origin: bool = True,
) -> tuple[Codec[ClientFrame], str | None] | Refusal:
    """The codec and the subprotocol to echo (None: the client offered none)."""
    refusal = origin_refusal(origin, allowed_origins, allow_missing_origin=allow_missing_origin)
    if refusal is not None:
        return refusal
    protocols = [p.strip() for header in offered for p in header.split(",") if p.strip()]
    if not protocols:
        return CLIENT_CODECS[JSON_SUBPROTOCOL], None
    for protocol in protocols:
        codec = CLIENT_CODECS.get(protocol)
        if codec is not None:
            return codec, protocol
    return Refusal(
        400,
        "unsupported-subprotocol",
        f"none of the offered subprotocols {protocols} is supported; "
        f"offer {' or '.join(CLIENT_CODECS)}",
    )


def check_upgrade(headers: dict[str, list[str]]) -> Refusal | None:
    """RFC 6455 §4.2.1: what a client's opening handshake must carry."""
    connection = [t.strip().lower() for v in headers.get("connection", []) for t in v.split(",")]
    if "upgrade" not in connection:
        return Refusal(400, "bad-upgrade", "a WebSocket upgrade needs 'Connection: Upgrade'")
    if headers.get("sec-websocket-version", []) != ["13"]:
        return Refusal(426, "bad-upgrade", "only WebSocket version 13 is supported")
    keys = headers.get("sec-websocket-key", [])
    try:
        if len(keys) != 1 or len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except (binascii.Error, ValueError):
        return Refusal(400, "bad-upgrade", "Sec-WebSocket-Key must be 16 bytes in base64")
    return None
