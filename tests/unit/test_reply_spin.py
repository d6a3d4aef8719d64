"""ReplySpin: how long a reader polls for its reply before sleeping on it, and when it rests."""

from __future__ import annotations

import os

import pytest

from caraway.clients.redis import (
    REPLY_SPIN,
    SPIN_MISSES,
    SPIN_REST,
    ReplySpin,
    reply_spin_option,
)
from caraway.exceptions import ImproperlyConfigured


class FakeConnection:
    """A connection whose reply turns readable after ``ready_after`` polls (never: None)."""

    def __init__(self, ready_after: int | None) -> None:
        self._sock: object | None = object()
        self.ready_after = ready_after
        self.polls = 0

    def can_read(self, timeout: float = 0) -> bool:
        assert timeout == 0  # a poll, never a wait
        self.polls += 1
        return self.ready_after is not None and self.polls > self.ready_after


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})


@pytest.mark.usefixtures("two_cpus")
def test_a_reply_that_comes_within_the_budget_is_polled_for_until_it_is_readable() -> None:
    spin = ReplySpin(1.0)  # a budget no test machine spends on three polls
    conn = FakeConnection(ready_after=3)
    spin.wait(conn)
    assert conn.polls == 4  # three misses, then the poll that found it


@pytest.mark.usefixtures("two_cpus")
def test_a_server_slower_than_the_budget_makes_the_spin_rest() -> None:
    spin = ReplySpin(0.00001)
    slow = FakeConnection(ready_after=None)
    for _ in range(SPIN_MISSES):
        spin.wait(slow)
    spent = slow.polls
    assert spent >= SPIN_MISSES  # each wait polled at least once before giving up
    for _ in range(SPIN_REST):
        spin.wait(slow)
    assert slow.polls == spent  # resting: the readers sleep at once
    spin.wait(slow)
    assert slow.polls > spent  # and then it tries again


@pytest.mark.usefixtures("two_cpus")
def test_a_reply_in_time_forgives_earlier_misses() -> None:
    spin = ReplySpin(0.00001)
    for _ in range(SPIN_MISSES - 1):
        spin.wait(FakeConnection(ready_after=None))
    spin.wait(FakeConnection(ready_after=0))
    for _ in range(SPIN_MISSES - 1):
        spin.wait(FakeConnection(ready_after=None))
    fresh = FakeConnection(ready_after=0)
    spin.wait(fresh)
    assert fresh.polls == 1  # not resting: the misses were never SPIN_MISSES in a row


@pytest.mark.usefixtures("two_cpus")
def test_off_or_a_closed_connection_never_polls() -> None:
    conn = FakeConnection(ready_after=None)
    ReplySpin(0).wait(conn)
    assert conn.polls == 0
    conn._sock = None  # can_read would connect it again: the read must see it closed
    ReplySpin(1.0).wait(conn)
    assert conn.polls == 0


def test_one_usable_cpu_never_spins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server could not run while its only CPU polls for the server's reply."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    conn = FakeConnection(ready_after=None)
    ReplySpin(1.0).wait(conn)
    assert conn.polls == 0


@pytest.mark.parametrize("value", [-0.001, "soon", None, True, float("nan")])
def test_a_reply_spin_that_is_no_number_of_seconds_is_refused_by_name(value: object) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"reply_spin must be a number of seconds"):
        reply_spin_option({"reply_spin": value})


def test_reply_spin_is_read_in_seconds_from_a_string_too_and_defaults_to_the_budget() -> None:
    assert reply_spin_option({"reply_spin": "0.001"}) == 0.001  # a URL query's string
    assert reply_spin_option({"reply_spin": 0}) == 0.0
    assert reply_spin_option({}) == REPLY_SPIN
