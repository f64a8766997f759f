"""Token buckets per user: how many frames a user may send, and when again."""

from __future__ import annotations

import math

__all__ = ["FLOOD_GRACE", "FloodWatch", "RateLimiter", "TokenBucket"]

FLOOD_GRACE = 1.0
"""Seconds a sender may stay over the rate limit before its strikes close it.

A burst (a client trickling all its ICE candidates at once) is answered frame
by frame with ``rate-limited``. A sender is flooding (protocol/SPEC.md §5 rule 9,
and §7: 4429) once it has had ``strikes`` frames refused in one run of
refusals lasting this long; a run ends when no frame was refused for this long.
"""


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; time is an argument."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """Spend a token: 0.0 if there was one, else the seconds until there is."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.tokens = tokens if tokens < self.burst else float(self.burst)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per userId, shared by all of that user's connections.

    A bucket lives while the user has a connection (`acquire` / `release`),
    so the limiter holds nothing for users who left. ``rate`` 0 turns it off.
    """

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[TokenBucket, int]] = {}

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self.rate > 0

    def acquire(self, user_id: str, now: float) -> TokenBucket | None:
        """A connection of ``user_id`` starts; returns the shared bucket (None if off)."""
        if not self.enabled:
            return None
        entry = self._buckets.get(user_id)
        if entry is None:
            bucket = TokenBucket(self.rate, self.burst, now)
            self._buckets[user_id] = (bucket, 1)
            return bucket
        self._buckets[user_id] = (entry[0], entry[1] + 1)
        return entry[0]

    def release(self, user_id: str) -> None:
        """A connection of ``user_id`` ended."""
        entry = self._buckets.get(user_id)
        if entry is None:
            return
        if entry[1] <= 1:
            del self._buckets[user_id]
        else:
            self._buckets[user_id] = (entry[0], entry[1] - 1)

    def __len__(self) -> int:
        return len(self._buckets)


class FloodWatch:
    """One connection's refused frames: whether it is flooding (`FLOOD_GRACE`)."""

    __slots__ = ("last_refused", "limit", "since", "strikes")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """Refused frames in one run that make a flood."""
        self.strikes = 0
        self.since = 0.0
        """When the current run of refusals began."""
        self.last_refused = -math.inf

    def refused(self, now: float) -> bool:
        """A frame was refused at ``now``: True once the sender is flooding."""
        if now - self.last_refused > FLOOD_GRACE:
            # calm for a while (or the first time): a new run of strikes
            self.since = now
            self.strikes = 0
        self.strikes += 1
        self.last_refused = now
        return self.strikes >= self.limit and now - self.since >= FLOOD_GRACE
