"""The pure rules of the signaling server: no sockets, no timers, no trio.

`Registry` holds who sits in which session; `Peer` applies the rules of protocol/SPEC.md §5
to the frames of one connection and hands the resulting frames to the
participants' ``deliver`` callables. The trio shell (`signaling.server`) owns
the sockets around it; tests drive the core directly.
"""

from __future__ import annotations

from .peer import Peer
from .ratelimit import FloodWatch, RateLimiter, TokenBucket
from .registry import Member, Registry

__all__ = ["FloodWatch", "Member", "Peer", "RateLimiter", "Registry", "TokenBucket"]
