"""ICE servers for ``welcome`` and ``POST /turn/credentials``: STUN first, then TURN.

Three providers behind one seam (`IceServersProvider`):

- `StaticIceServers`: the configured STUN URLs (default Google's), no TURN.
- `CloudflareTurn`: Cloudflare Realtime TURN credentials, fetched with httpx,
  shared and cached until shortly before they expire; concurrent callers
  wait for the one fetch in flight; any upstream failure degrades to STUN
  only with one warning, never an error for the client.
- `RestTurn`: time-limited credentials for coturn and other servers that
  implement the TURN REST API (draft-uberti-behave-turn-rest), minted
  locally per user with a shared secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import msgspec
import trio

from ..frames import IceServer

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Settings

__all__ = [
    "CLOUDFLARE_MAX_TTL",
    "CloudflareTurn",
    "IceServersProvider",
    "RestTurn",
    "StaticIceServers",
    "ice_provider",
    "rest_credentials",
]

log = logging.getLogger("signaling.ice")

CLOUDFLARE_MAX_TTL = 48 * 3600
"""Cloudflare's longest credential lifetime, in seconds."""
FAILURE_BACKOFF = 10.0
"""Seconds a failed upstream fetch is remembered: a burst of joins makes one call."""


class IceServersProvider(Protocol):
    """Produces the ``iceServers`` list for a user: STUN servers first, then TURN."""

    async def ice_servers(self, user_id: str | None) -> list[IceServer]:
        """The list for ``user_id`` (None: an unauthenticated HTTP caller)."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (HTTP connections)."""
        ...


def _stun(stun_urls: tuple[str, ...] | list[str]) -> list[IceServer]:
    """One entry per STUN URL, ``urls`` a string: the old server's shape."""
    return [IceServer(urls=url) for url in stun_urls]


class StaticIceServers:
    """A fixed list of STUN URLs (by default Google's public STUN servers)."""

    def __init__(self, stun_urls: tuple[str, ...]) -> None:
        self._servers = _stun(stun_urls)

    async def ice_servers(self, user_id: str | None) -> list[IceServer]:
        """The configured STUN servers, the same for everyone."""
        return list(self._servers)

    async def aclose(self) -> None:
        """Nothing to release."""


def rest_credentials(secret: str, user_id: str, ttl: int, now: float) -> tuple[str, str]:
    """TURN REST API credentials: ``("{expiry}:{user}", base64(HMAC-SHA1(secret, username)))``."""
    username = f"{int(now) + ttl}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


class RestTurn:
    """coturn-style shared-secret TURN: credentials minted here for each user."""

    def __init__(
        self,
        stun_urls: tuple[str, ...],
        turn_urls: tuple[str, ...],
        secret: str,
        ttl: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stun = _stun(stun_urls)
        self._urls = list(turn_urls)
        self._secret = secret
        self._ttl = ttl
        self._clock = clock

    async def ice_servers(self, user_id: str | None) -> list[IceServer]:
        """STUN, then TURN with a username that expires in ``ttl`` seconds."""
        username, credential = rest_credentials(
            self._secret, user_id or "anonymous", self._ttl, self._clock()
        )
        return [*self._stun, IceServer(urls=self._urls, username=username, credential=credential)]

    async def aclose(self) -> None:
        """Nothing to release."""


class _CloudflareServer(msgspec.Struct):
    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


class _CloudflareAnswer(msgspec.Struct, rename="camel"):
    # generate-ice-servers answers a list; the older /credentials/generate an object
    ice_servers: list[_CloudflareServer] | _CloudflareServer


_DECODE_ANSWER = msgspec.json.Decoder(_CloudflareAnswer).decode


class CloudflareTurn:
    """Cloudflare Realtime TURN, shared by every user and cached.

    ``POST {base}/v1/turn/keys/{key_id}/credentials/generate-ice-servers``
    with ``{"ttl": ttl}`` answers 201 and ``iceServers``. The result is kept
    until ``refresh_margin`` seconds before it expires. Failures (timeout,
    4xx, 5xx, a body we cannot read) give STUN only for `FAILURE_BACKOFF`
    seconds, with one warning and a count in ``failures``.
    """

    def __init__(
        self,
        stun_urls: tuple[str, ...],
        *,
        key_id: str,
        api_token: str,
        ttl: int,
        base_url: str,
        timeout: float,
        refresh_margin: float,
        allow_port_53: bool = False,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._stun = _stun(stun_urls)
        self.ttl = min(ttl, CLOUDFLARE_MAX_TTL)
        self._url = f"{base_url.rstrip('/')}/v1/turn/keys/{key_id}/credentials/generate-ice-servers"
        self._headers = {"Authorization": f"Bearer {api_token}"}
        self._timeout = timeout
        self._margin = min(refresh_margin, self.ttl / 2)
        self._allow_53 = allow_port_53
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._cached: list[IceServer] = []
        self._fresh_until = -math.inf
        self._fetching: trio.Event | None = None
        self.fetches = 0
        """Upstream calls made so far."""
        self.failures: Counter[str] = Counter()
        """Failed upstream calls by reason (an HTTP status, ``timeout``, ``error``)."""

    async def ice_servers(self, user_id: str | None) -> list[IceServer]:
        """STUN, then Cloudflare's servers (fetched at most once per lifetime)."""
        while self._clock() >= self._fresh_until:
            if self._fetching is not None:
                await self._fetching.wait()
                continue
            self._fetching = trio.Event()
            try:
                await self._refresh()
            finally:
                self._fetching.set()
                self._fetching = None
        return [*self._stun, *self._cached]

    async def _refresh(self) -> None:
        self.fetches += 1
        try:
            servers = await self._fetch()
        except _UpstreamError as exc:
            self.failures[exc.reason] += 1
            log.warning("Cloudflare TURN unavailable (%s); answering STUN only", exc)
            self._cached = []
            self._fresh_until = self._clock() + FAILURE_BACKOFF
            return
        self._cached = servers
        self._fresh_until = self._clock() + self.ttl - self._margin

    async def _fetch(self) -> list[IceServer]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        try:
            response = await self._client.post(
                self._url, headers=self._headers, json={"ttl": self.ttl}
            )
        except httpx.TimeoutException as exc:
            raise _UpstreamError("timeout", f"no answer within {self._timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise _UpstreamError("error", f"{type(exc).__name__}: {exc}") from exc
        if response.status_code not in (200, 201):
            raise _UpstreamError(
                str(response.status_code), f"HTTP {response.status_code} from {self._url}"
            )
        try:
            answer = _DECODE_ANSWER(response.content)
        except msgspec.MsgspecError as exc:
            raise _UpstreamError("error", f"unreadable answer: {exc}") from exc
        listed = answer.ice_servers
        servers = listed if isinstance(listed, list) else [listed]
        return [entry for server in servers for entry in self._convert(server)]

    def _convert(self, server: _CloudflareServer) -> list[IceServer]:
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        if not self._allow_53:
            # browsers block port 53; Cloudflare lists it for restrictive networks
            urls = [url for url in urls if _port(url) != 53]
        if not urls:
            return []
        if server.username is None and server.credential is None:
            return _stun(urls)
        extra: dict[str, Any] = {}
        if server.username is not None:
            extra["username"] = server.username
        if server.credential is not None:
            extra["credential"] = server.credential
        return [IceServer(urls=urls, **extra)]

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _port(url: str) -> int | None:
    rest = url.split(":", 1)[-1].split("?", 1)[0]
    host, _, port = rest.rpartition(":")
    return int(port) if host and port.isdigit() else None


class _UpstreamError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def ice_provider(settings: Settings) -> IceServersProvider:
    """The provider ``TURN_PROVIDER`` names, configured from ``settings``."""
    if settings.turn_provider == "cloudflare":
        return CloudflareTurn(
            settings.stun_urls,
            key_id=settings.cloudflare_turn_key_id,
            api_token=settings.cloudflare_api_token,
            ttl=settings.turn_ttl,
            base_url=settings.cloudflare_api_base_url,
            timeout=settings.turn_request_timeout,
            refresh_margin=settings.turn_refresh_margin,
            allow_port_53=settings.turn_allow_port_53,
        )
    if settings.turn_provider == "rest":
        return RestTurn(
            settings.stun_urls,
            settings.turn_rest_urls,
            settings.turn_rest_secret,
            settings.turn_ttl,
        )
    return StaticIceServers(settings.stun_urls)
