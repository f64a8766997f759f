"""The ICE-servers seam: what ``welcome`` and ``POST /turn/credentials`` hand out."""

from __future__ import annotations

from typing import Protocol

from ..frames import IceServer

__all__ = ["IceServersProvider", "StaticIceServers"]


class IceServersProvider(Protocol):
    """Produces the ``iceServers`` list for a user: STUN servers first, then TURN."""

    async def ice_servers(self, user_id: str | None) -> list[IceServer]:
        """The list for ``user_id`` (None: an unauthenticated HTTP caller)."""
        ...


class StaticIceServers:
    """A fixed list of STUN URLs (by default Google's public STUN servers)."""

    def __init__(self, stun_urls: tuple[str, ...]) -> None:
        self._servers = [IceServer(urls=list(stun_urls))] if stun_urls else []

    async def ice_servers(self, user_id: str | None) -> list[IceServer]:
        """The configured STUN servers, the same for everyone."""
        return list(self._servers)
