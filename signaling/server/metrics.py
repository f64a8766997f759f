"""Counters for ``GET /metrics``: plain integers on the hot path, Prometheus at scrape.

Incrementing a prometheus-client metric takes a lock and a label lookup; a
node relays tens of thousands of frames a second, so the hot paths bump
plain dict entries here and `Collector` turns them into metric families only
when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .hub import Hub

__all__ = ["LATENCY_BUCKETS", "MetricsCollector", "Stats"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: upper bounds of the relay latency histogram."""


class Stats:
    """What happened on this node, counted cheaply."""

    __slots__ = (
        "closes",
        "errors",
        "frames_in",
        "frames_out",
        "latency_buckets",
        "latency_count",
        "latency_sum",
        "rate_limited",
        "upgrades_refused",
    )

    def __init__(self) -> None:
        self.frames_in: Counter[str] = Counter()
        self.frames_out: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.upgrades_refused: Counter[str] = Counter()
        self.rate_limited = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe_latency(self, seconds: float, frames: int) -> None:
        """``frames`` frames waited ``seconds`` between routing and their write."""
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += frames
        self.latency_sum += seconds * frames
        self.latency_count += frames


class MetricsCollector(Collector):
    """Reads a `Hub` and its `Stats` at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        hub = self.hub
        stats = hub.stats
        registry = hub.registry
        yield GaugeMetricFamily(
            "signaling_connections", "Open WebSocket connections.", value=len(hub.connections)
        )
        yield GaugeMetricFamily(
            "signaling_sessions",
            "Sessions with at least one participant.",
            value=registry.session_count,
        )
        yield GaugeMetricFamily(
            "signaling_participants",
            "Seats taken over all sessions.",
            value=registry.participant_count,
        )
        queued = [len(c.outbox) for c in hub.connections]
        yield GaugeMetricFamily(
            "signaling_outbox_frames", "Frames queued in all outboxes.", value=sum(queued)
        )
        yield GaugeMetricFamily(
            "signaling_outbox_max_frames",
            "Frames queued in the fullest outbox.",
            value=max(queued, default=0),
        )
        yield _labelled("signaling_frames_in", "Frames received, by type.", "type", stats.frames_in)
        yield _labelled("signaling_frames_out", "Frames sent, by type.", "type", stats.frames_out)
        relayed = CounterMetricFamily(
            "signaling_relayed", "Signals (offer, answer, ice-candidate) relayed to a participant."
        )
        relayed.add_metric(
            [], sum(stats.frames_out[t] for t in ("offer", "answer", "ice-candidate"))
        )
        yield relayed
        yield _labelled("signaling_errors", "Error frames sent, by code.", "code", stats.errors)
        limited = CounterMetricFamily("signaling_rate_limited", "Frames refused by the rate limit.")
        limited.add_metric([], stats.rate_limited)
        yield limited
        yield _labelled(
            "signaling_closes",
            "Connections closed, by close code (1006: the client vanished).",
            "code",
            {str(code): n for code, n in stats.closes.items()},
        )
        yield _labelled(
            "signaling_upgrades_refused",
            "WebSocket upgrades refused, by reason.",
            "reason",
            stats.upgrades_refused,
        )
        yield _labelled(
            "signaling_connection_states",
            "connection-state reports, by state.",
            "state",
            registry.connection_states,
        )
        upstream_failures = getattr(hub.ice, "failures", None)
        if upstream_failures is not None:
            yield _labelled(
                "signaling_turn_upstream_failures",
                "Failed TURN credential fetches, by reason (HTTP status, timeout, error).",
                "reason",
                upstream_failures,
            )
            fetches = CounterMetricFamily(
                "signaling_turn_upstream_requests", "TURN credential fetches made upstream."
            )
            fetches.add_metric([], getattr(hub.ice, "fetches", 0))
            yield fetches
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(
            [*map(str, LATENCY_BUCKETS), "+Inf"], stats.latency_buckets, strict=True
        ):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "signaling_relay_latency_seconds",
            "Time from routing a frame into an outbox to the end of its socket write "
            "(each batch counts its oldest frame's wait for all its frames).",
            buckets=buckets,
            sum_value=stats.latency_sum,
        )


def _labelled(
    name: str, documentation: str, label: str, values: Counter[str] | dict[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family
