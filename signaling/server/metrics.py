"""``GET /metrics``: the node's counters (`signaling.server.stats`) and tables as
Prometheus metric families, made at scrape time.

The collector reads what it is given, not the Hub: the `Stats`, the session
registry, the live set of connections (for their outboxes) and the ICE
provider (for its upstream counters, when it has them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .stats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Collection, Iterator, Sized

    from ..core import Registry
    from .stats import Stats

__all__ = ["MetricsCollector"]


class _Queued(Protocol):
    @property
    def outbox(self) -> Sized: ...


class _AwayTable(Protocol):
    def __len__(self) -> int: ...
    @property
    def seats(self) -> int: ...
    @property
    def held(self) -> int: ...


class MetricsCollector(Collector):
    """Reads a node's `Stats`, registry, connections, away table (resume) and ICE
    provider at scrape time."""

    def __init__(
        self,
        stats: Stats,
        registry: Registry,
        connections: Collection[_Queued],
        ice: object,
        away: _AwayTable | None = None,
    ) -> None:
        self.stats = stats
        self.away = away
        self.registry = registry
        self.connections = connections
        """The node's live set (read at each scrape, never copied)."""
        self.ice = ice

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        stats = self.stats
        registry = self.registry
        yield GaugeMetricFamily(
            "signaling_connections", "Open WebSocket connections.", value=len(self.connections)
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
        queued = [len(c.outbox) for c in self.connections]
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
        if self.away is not None:
            yield GaugeMetricFamily(
                "signaling_away_connections",
                "Connections that dropped and may resume within the window.",
                value=len(self.away),
            )
            yield GaugeMetricFamily(
                "signaling_away_seats",
                "Seats kept for away connections.",
                value=self.away.seats,
            )
            yield GaugeMetricFamily(
                "signaling_held_frames",
                "Frames held for away connections (signals and the membership news).",
                value=self.away.held,
            )
        yield _labelled(
            "signaling_resumes",
            "auth frames that asked to resume, by outcome (resumed, refused).",
            "outcome",
            stats.resumes,
        )
        yield _labelled(
            "signaling_resume_expiries",
            "Away connections that left for good, by why (window, overflow, capacity, shutdown).",
            "why",
            stats.resume_expiries,
        )
        upstream_failures = getattr(self.ice, "failures", None)
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
            fetches.add_metric([], getattr(self.ice, "fetches", 0))
            yield fetches
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        counts, seconds = stats.latency_histogram()
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "signaling_relay_latency_seconds",
            "Time from routing a frame into an outbox to the end of its socket write "
            "(each batch counts its oldest frame's wait for all its frames).",
            buckets=buckets,
            sum_value=seconds,
        )


def _labelled(
    name: str, documentation: str, label: str, values: Counter[str] | dict[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family
