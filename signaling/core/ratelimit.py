"""Token buckets per user: how many frames a user may send, and when again."""

from __future__ import annotations

__all__ = ["RateLimiter", "TokenBucket"]


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
