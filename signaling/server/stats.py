"""What happened on this node, counted cheaply: plain integers on the hot path.

Incrementing a prometheus-client metric takes a lock and a label lookup; a
node relays tens of thousands of frames a second, so the hot paths bump plain
dict entries here and `signaling.server.metrics` turns them into metric
families only when Prometheus scrapes. This module imports nothing of ours.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["LATENCY_BUCKETS", "Stats"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: upper bounds of the relay latency histogram."""


class Stats:
    """What happened on this node, counted cheaply.

    ``frame_types``: every frame type a client may send (``frames_in``) and
    the server may send (``frames_out``), counted from zero. They are plain
    dicts filled up front, not counters: a frame is counted twice on the
    relay path, and CPython's fast path for ``d[key] += 1`` is for exact
    dicts only (a `Counter` takes three times as long).
    """

    __slots__ = (
        "closes",
        "errors",
        "frames_in",
        "frames_out",
        "latency_buckets",
        "latency_sum",
        "rate_limited",
        "resume_expiries",
        "resumes",
        "sent_at_once",
        "upgrades_refused",
    )

    def __init__(self, frame_types: tuple[Iterable[str], Iterable[str]]) -> None:
        self.frames_in: dict[str, int] = dict.fromkeys(frame_types[0], 0)
        self.frames_out: dict[str, int] = dict.fromkeys(frame_types[1], 0)
        self.errors: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.upgrades_refused: Counter[str] = Counter()
        self.rate_limited = 0
        self.resumes: Counter[str] = Counter()
        """``auth`` frames that asked to resume, by outcome: resumed, refused."""
        self.resume_expiries: Counter[str] = Counter()
        """Away connections that left for good, by why: window, overflow, capacity, shutdown."""
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.sent_at_once = 0
        """Frames written by the routing task itself, without waiting in an outbox:
        each is a relay latency of 0 (kept apart so the relay path adds 1 to an
        integer, not a histogram observation; `latency_histogram` adds them)."""

    def observe_latency(self, seconds: float, frames: int) -> None:
        """``frames`` frames waited ``seconds`` between routing and their write."""
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += frames
        self.latency_sum += seconds * frames

    def latency_histogram(self) -> tuple[list[int], float]:
        """Per-bucket counts (the last is over the largest bound) and the sum in
        seconds, frames written at once included."""
        buckets = list(self.latency_buckets)
        buckets[0] += self.sent_at_once
        return buckets, self.latency_sum
