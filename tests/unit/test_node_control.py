"""NodeControl over a fake supervisor: what remote control reads and what it asks for."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway
from caraway.worker.buckets import SharedBuckets
from caraway.worker.children import Child
from caraway.worker.ipc import (
    AddConsumer,
    CancelConsumer,
    Command,
    Holding,
    Revoke,
    SetRateLimit,
    SetTaskEvents,
    TaskStarted,
)
from caraway.worker.node import NodeControl


class FakeSupervisor:
    """Records what NodeControl asks of it."""

    def __init__(self, app: Caraway) -> None:
        self.children: dict[int, Child] = {}
        self.concurrency = 2
        self.transport = app.connection()
        self.relayed: list[Command] = []
        self.terminated: list[tuple[str, int]] = []
        self.shutdowns = 0

    def relay(self, command: Command, /) -> None:
        self.relayed.append(command)

    def terminate(self, task_id: str, signum: int, /) -> bool:
        self.terminated.append((task_id, signum))
        return True

    def grow(self, count: int, /) -> int:
        self.concurrency += count
        return self.concurrency

    def shrink(self, count: int, /) -> int:
        self.concurrency -= count
        return self.concurrency

    def request_shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def app() -> Caraway:
    app = Caraway("node", broker="memory://node-control", set_as_current=False)

    @app.task(name="node.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


@pytest.fixture
def supervisor(app: Caraway) -> Iterator[FakeSupervisor]:
    fake = FakeSupervisor(app)
    try:
        yield fake
    finally:
        fake.transport.close()


@pytest.fixture
def node(app: Caraway, supervisor: FakeSupervisor) -> NodeControl:
    return NodeControl(
        app,
        hostname="w1@test",
        pool="prefork",
        pid=4242,
        queues=["celery"],
        buckets=SharedBuckets([("node.add", None)]),
        supervisor=supervisor,
    )


def test_revoke_remembers_relays_and_terminates(
    node: NodeControl, supervisor: FakeSupervisor
) -> None:
    node.revoke(["a", "b"], True, "SIGTERM")
    assert node.revoked() == ["a", "b"]
    assert supervisor.relayed == [Revoke(("a", "b"))]
    assert supervisor.terminated == [("a", signal.SIGTERM), ("b", signal.SIGTERM)]


def test_revocations_from_the_broker_are_relayed_once(
    node: NodeControl, supervisor: FakeSupervisor
) -> None:
    node.learn_revoked(["b", "a"])
    node.learn_revoked(["a", "c"])
    assert supervisor.relayed == [Revoke(("a", "b")), Revoke(("c",))]
    assert node.revoked() == ["a", "b", "c"]


def test_consumers_limits_and_events_are_relayed_as_records(
    node: NodeControl, supervisor: FakeSupervisor, app: Caraway
) -> None:
    node.add_consumer("images")
    node.cancel_consumer("celery")
    node.set_rate_limit("node.add", "5/s")
    node.set_events(True)
    assert node.queues == ["images"]
    assert app.tasks["node.add"].rate_limit == "5/s"
    assert supervisor.relayed == [
        AddConsumer("images"),
        CancelConsumer("celery"),
        SetRateLimit("node.add", "5/s"),
        SetTaskEvents(True),
    ]
    with pytest.raises(KeyError, match="unknown task"):
        node.set_rate_limit("node.nope", "1/s")


def test_answers_come_from_the_childrens_reports(
    node: NodeControl, supervisor: FakeSupervisor
) -> None:
    running = TaskStarted("t-1", "node.add", "tag", False, False, None, None, "(1, 2)", "{}")
    supervisor.children[10] = Child(index=0, pid=10, announced=running)
    supervisor.children[11] = Child(
        index=1,
        pid=11,
        holding=Holding(reserved=(("t-2", "node.add"),), scheduled=((1.7e9, ("t-3", "node.add")),)),
    )
    node.count_processed("node.add", "success")
    node.count_processed("node.add", "failure")
    active: list[dict[str, Any]] = node.active()
    assert [(item["id"], item["args"], item["worker_pid"]) for item in active] == [
        ("t-1", "(1, 2)", 10)
    ]
    assert [(item["id"], item["worker_pid"]) for item in node.reserved()] == [("t-2", 11)]
    # Celery's shape: an ISO-8601 eta (Flower's worker page parses it)
    scheduled = [(item["eta"], item["request"]["id"]) for item in node.scheduled()]
    assert scheduled == [("2023-11-14T22:13:20+00:00", "t-3")]
    assert set(node.query_task(["t-1", "t-2", "t-9"])) == {"t-1", "t-2"}
    stats = node.stats()
    assert stats["total"] == {"node.add": 2} and stats["failed"] == 1
    assert stats["pool"]["processes"] == [10, 11]
    assert node.pool_grow(2) == 4 == node.stats()["pool"]["max-concurrency"]
    node.shutdown()
    assert supervisor.shutdowns == 1
