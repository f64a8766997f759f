"""The connection lifecycle's state machine, every transition, and its timers' rules (sans I/O)."""

from __future__ import annotations

import math

import pytest

from signaling.core.lifecycle import (
    Beat,
    Heartbeat,
    Lifecycle,
    LifecycleError,
    Phase,
    token_expired,
)


def test_a_normal_life() -> None:
    life = Lifecycle()
    phases = [life.phase]
    life.authenticated()
    phases.append(life.phase)
    assert life.code is None
    assert life.close(1000, "bye", by="client") is True
    phases.append(life.phase)
    assert life.code == 1000
    assert life.ended() == (1000, "client")
    phases.append(life.phase)
    assert phases == [Phase.AUTHENTICATING, Phase.OPEN, Phase.CLOSING, Phase.CLOSED]


def test_the_first_close_wins() -> None:
    life = Lifecycle()
    assert life.close(4408, "no auth") is True
    assert life.close(1000, "later") is False
    assert (life.code, life.reason, life.closed_by) == (4408, "no auth", "server")
    assert life.ended() == (4408, "server")
    assert life.close(1000) is False  # after the end too


@pytest.mark.parametrize(
    ("client_close", "ended"),
    [(None, (1006, "network")), (1006, (1006, "network")), (1001, (1001, "client"))],
)
def test_an_end_without_a_close_says_who_ended_it(
    client_close: int | None, ended: tuple[int, str]
) -> None:
    life = Lifecycle()
    life.authenticated()
    assert life.ended(client_close) == ended


def test_transitions_the_table_forbids_raise() -> None:
    life = Lifecycle()
    life.close(1001)
    with pytest.raises(LifecycleError, match="closing cannot become open"):
        life.authenticated()
    life.ended()
    with pytest.raises(LifecycleError, match="closed cannot become closed"):
        life.ended()
    opened = Lifecycle()
    opened.authenticated()
    with pytest.raises(LifecycleError, match="open cannot become open"):
        opened.authenticated()


def test_the_heartbeat_pings_once_per_silence_and_times_out_before_the_limit() -> None:
    heartbeat = Heartbeat(interval=20.0, timeout=8.0)
    assert heartbeat.tick == 2.0
    never = -math.inf
    assert heartbeat.check(10.0, last_activity=0.0, pinged_at=never) is Beat.QUIET
    assert heartbeat.check(20.0, last_activity=0.0, pinged_at=never) is Beat.PING
    # pinged at 20: no second ping for the same silence
    assert heartbeat.check(24.0, last_activity=0.0, pinged_at=20.0) is Beat.QUIET
    # the limit is 28 s; the last check before it (26) ends it, not the first after (28+)
    assert heartbeat.check(25.9, last_activity=0.0, pinged_at=20.0) is Beat.QUIET
    assert heartbeat.check(26.0, last_activity=0.0, pinged_at=20.0) is Beat.TIMEOUT
    # a pong at 21 refreshes it: quiet until the next silence, then one ping again
    assert heartbeat.check(26.0, last_activity=21.0, pinged_at=20.0) is Beat.QUIET
    assert heartbeat.check(41.0, last_activity=21.0, pinged_at=20.0) is Beat.PING


def test_engine_io_transports_are_pinged_every_interval_whatever_the_traffic() -> None:
    heartbeat = Heartbeat(interval=25.0, timeout=20.0)
    assert heartbeat.check(100.0, 99.0, pinged_at=75.0, always_ping=True) is Beat.PING
    assert heartbeat.check(100.0, 99.0, pinged_at=80.0, always_ping=True) is Beat.QUIET


def test_a_token_expires_at_its_exp_and_none_never_does() -> None:
    assert not token_expired(None, 1e12)
    assert not token_expired(100.0, 99.9)
    assert token_expired(100.0, 100.0)
