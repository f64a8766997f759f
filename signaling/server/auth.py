"""The identity and membership seams.

An `Authenticator` turns an ``auth`` frame into a userId; an `Authorizer`
decides whether a user may join a session. Development mode (the default)
trusts the ``userId`` and allows every join; token verifiers and webhook
authorizers plug in here without touching the connection code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..frames import Auth

__all__ = ["AllowAll", "Authenticator", "Authorizer", "DevelopmentAuthenticator"]


class Authenticator(Protocol):
    """Verifies an ``auth`` frame; raises `signaling.errors.Unauthorized`."""

    async def authenticate(self, frame: Auth) -> str:
        """The verified userId of the connection."""
        ...


class Authorizer(Protocol):
    """Decides joins; raises `signaling.errors.Forbidden` to refuse."""

    async def authorize_join(self, user_id: str, session_id: str) -> None:
        """Return to allow ``user_id`` into ``session_id``."""
        ...


class DevelopmentAuthenticator:
    """Takes the ``userId`` of the ``auth`` frame as given (no verification)."""

    async def authenticate(self, frame: Auth) -> str:
        """The frame's own ``userId``."""
        return frame.user_id


class AllowAll:
    """Every authenticated user may join every session."""

    async def authorize_join(self, user_id: str, session_id: str) -> None:
        """Allow."""
