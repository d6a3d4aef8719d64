"""The BeatStore contract, held by every broker: one leader at a time, a standby that takes
over when the leader goes, claims that only the leader can make and never twice, state
that survives a failover, and runtime entries any process can add.

Redis db 9 and RabbitMQ queues named ``beat-*`` are this suite's own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from caraway.brokers.contracts import BeatAdvance, BeatRun, BeatStore
from caraway.brokers.memory import beat as memory_beat
from caraway.brokers.registry import open_beat_store
from caraway.exceptions import BrokerError
from tests.contract.conftest import _plugin_or_skip, _rabbit_or_skip, delete_amqp_queues

REDIS_URL = "redis://127.0.0.1:6379/9"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
LEASE = 1.0
#: scheduled instants in tests are recent: stores drop run keys older than a day
T0 = int(time.time() * 1000)

StoreFactory = Callable[..., BeatStore]


def _url(kind: str, tmp_path: Path) -> str:
    if kind == "memory":
        return f"memory://{uuid.uuid4()}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'beat.sqlite3'}"
    _plugin_or_skip(f"caraway.brokers.{kind}.beat")
    if kind == "amqp":
        _rabbit_or_skip()
        return AMQP_URL
    return REDIS_URL


@pytest.fixture(params=["memory", "sqlite", "redis", "amqp"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens beat stores on one schedule private to this test; closes and deletes it."""
    kind: str = request.param
    url = _url(kind, tmp_path)
    namespace = f"beat-{uuid.uuid4().hex[:10]}"
    opened: list[BeatStore] = []

    def factory(node: str = "n1", lease_seconds: float = LEASE) -> BeatStore:
        store = open_beat_store(
            url,
            namespace=namespace,
            holder=f"{node}/{uuid.uuid4().hex[:8]}",
            node=node,
            lease_seconds=lease_seconds,
        )
        opened.append(store)
        return store

    try:
        yield factory
    finally:
        for store in opened:
            store.close()
        memory_beat.reset(url)
        if kind == "amqp":
            delete_amqp_queues([f"{namespace}.beat", f"{namespace}.beat.status"])
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{namespace}:*"))
            if keys:
                client.delete(*keys)
            client.close()


def wait_lead(store: BeatStore, timeout: float = LEASE * 4 + 2) -> None:
    deadline = time.monotonic() + timeout
    while not store.lead():
        assert time.monotonic() < deadline, f"{store.holder} did not take the lease"
        time.sleep(0.05)


def run(scheduled_ms: int, store: BeatStore) -> BeatRun:
    return BeatRun(scheduled_ms, f"task-{scheduled_ms}", store.holder, time.time())


def test_one_instance_leads_and_the_others_stand_by(stores: StoreFactory) -> None:
    first, second, third = stores("w1"), stores("w2"), stores("beat")
    wait_lead(first)
    assert not second.lead() and not third.lead()
    assert first.lead()  # renewing
    leader = second.state().leader or first.state().leader
    assert leader is not None and leader.holder == first.holder and leader.node == "w1"


def test_a_standby_takes_over_once_the_leader_resigns(stores: StoreFactory) -> None:
    first, second = stores("w1"), stores("w2")
    wait_lead(first)
    assert not second.lead()
    first.resign()
    wait_lead(second, timeout=3)
    assert not first.lead()


def test_a_standby_takes_over_when_the_leader_dies_without_resigning(
    stores: StoreFactory,
) -> None:
    first, second = stores("w1"), stores("w2")
    wait_lead(first)
    assert not second.lead()
    died = time.monotonic()
    first.close()  # a crash: the lease lapses, or the broker sees the connection go
    wait_lead(second)
    assert time.monotonic() - died < LEASE + 2


def test_claims_compare_and_set_the_entry_mark(stores: StoreFactory) -> None:
    leader = stores()
    wait_lead(leader)
    assert leader.advance([BeatAdvance("tick", None, T0 + 1_000)]) == [True]
    assert leader.advance([BeatAdvance("tick", None, T0 + 2_000, (run(T0 + 2_000, leader),))]) == [
        False
    ]
    claim = BeatAdvance("tick", T0 + 1_000, T0 + 2_000, (run(T0 + 2_000, leader),))
    assert leader.advance([claim, BeatAdvance("other", None, T0 + 5)]) == [True, True]
    state = leader.state().entries["tick"]
    assert state.last_ms == T0 + 2_000 and state.count == 1
    assert state.last_run is not None and state.last_run.task_id == f"task-{T0 + 2_000}"
    assert leader.state().entries["other"].last_ms == T0 + 5


def test_a_run_is_never_claimed_twice_even_after_its_entry_is_forgotten(
    stores: StoreFactory,
) -> None:
    leader = stores()
    wait_lead(leader)
    assert leader.advance([BeatAdvance("tick", None, T0 + 1_000, (run(T0 + 1_000, leader),))]) == [
        True
    ]
    leader.forget(["tick"])
    wait_lead(leader)
    assert "tick" not in leader.state().entries
    again = BeatAdvance("tick", None, T0 + 1_000, (run(T0 + 1_000, leader),))
    assert leader.advance([again]) == [False]
    assert leader.advance([BeatAdvance("tick", None, T0 + 1_001, (run(T0 + 1_001, leader),))]) == [
        True
    ]


def test_only_the_leader_can_claim(stores: StoreFactory) -> None:
    leader, standby = stores("w1"), stores("w2")
    wait_lead(leader)
    assert not standby.lead()
    assert standby.advance([BeatAdvance("tick", None, T0 + 1_000)]) == [False]
    standby.forget(["tick"])  # refused quietly
    assert leader.advance([BeatAdvance("tick", None, T0 + 1_000)]) == [True]
    wait_lead(leader)
    assert leader.state().entries["tick"].last_ms == T0 + 1_000


def test_a_leader_that_lost_its_lease_can_no_longer_claim(stores: StoreFactory) -> None:
    old, new = stores("w1"), stores("w2")
    wait_lead(old)
    assert old.advance([BeatAdvance("tick", None, T0 + 1_000)]) == [True]
    old.close()  # its lease goes; a new leader takes over and moves the entry on
    wait_lead(new)
    assert new.advance([BeatAdvance("tick", T0 + 1_000, T0 + 2_000, (run(T0 + 2_000, new),))]) == [
        True
    ]
    try:
        refused = old.advance(
            [BeatAdvance("tick", T0 + 1_000, T0 + 2_000, (run(T0 + 2_000, old),))]
        )
    except BrokerError:
        refused = [False]
    assert refused == [False]
    assert new.state().entries["tick"].last_run.holder == new.holder  # type: ignore[union-attr]


def test_state_survives_a_failover(stores: StoreFactory) -> None:
    old, new = stores("w1"), stores("w2")
    wait_lead(old)
    assert new.lead() is False
    claims = [BeatAdvance(f"e{i}", None, T0 + i, (run(T0 + i, old),)) for i in range(5)]
    assert old.advance(claims) == [True] * 5
    old.close()
    wait_lead(new)
    entries = new.state().entries
    assert {name: state.last_ms for name, state in entries.items()} == {
        f"e{i}": T0 + i for i in range(5)
    }
    assert all(state.count == 1 for state in entries.values())


def test_runtime_entries_added_anywhere_reach_the_leader_and_every_reader(
    stores: StoreFactory,
) -> None:
    leader, cli, reader = stores("w1"), stores("cli"), stores("reader")
    wait_lead(leader)
    cli.put_entry("nightly", b'{"task": "t"}')
    deadline = time.monotonic() + 5
    while "nightly" not in leader.state().runtime:
        assert time.monotonic() < deadline
        leader.lead()  # the leader folds edits in as it ticks
        time.sleep(0.05)
    assert leader.state().runtime["nightly"] == b'{"task": "t"}'
    deadline = time.monotonic() + 5
    while reader.state().runtime.get("nightly") != b'{"task": "t"}':
        assert time.monotonic() < deadline
        leader.lead()
        time.sleep(0.05)
    assert cli.remove_entry("nightly") is True
    deadline = time.monotonic() + 5
    while "nightly" in reader.state().runtime:
        assert time.monotonic() < deadline
        leader.lead()
        time.sleep(0.05)
    assert cli.remove_entry("never-added") is False


def test_a_runtime_entry_replaced_keeps_the_latest_spec(stores: StoreFactory) -> None:
    leader, cli = stores("w1"), stores("cli")
    wait_lead(leader)
    for version in range(3):
        cli.put_entry("e", f'{{"v": {version}}}'.encode())
    deadline = time.monotonic() + 5
    while leader.state().runtime.get("e") != b'{"v": 2}':
        assert time.monotonic() < deadline
        leader.lead()
        time.sleep(0.05)
