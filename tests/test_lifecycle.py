"""The connection lifecycle's state machine, every transition (sans I/O)."""

from __future__ import annotations

import pytest

from signaling.core.lifecycle import Lifecycle, LifecycleError, Phase


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
