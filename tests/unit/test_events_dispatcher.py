"""EventDispatcher and EventReceiver on the in-process bus: batching, order, off-thread sends."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from caraway.app import Caraway
from caraway.brokers.contracts import EventBus
from caraway.brokers.registry import open_bus
from caraway.events.dispatcher import EventDispatcher, send_task_sent
from caraway.events.receiver import EventReceiver
from caraway.exceptions import BrokerError
from caraway.protocol import events as proto
from caraway.protocol.message import Message
from tests.helpers import wait_until


@pytest.fixture
def app() -> Iterator[Caraway]:
    application = Caraway("evt", broker=f"memory://events-{uuid.uuid4().hex}")
    try:
        yield application
    finally:
        application.close()


class Recorder:
    """A subscriber on the app's memory bus that keeps (routing key, events) pairs."""

    def __init__(self, app: Caraway) -> None:
        self.bus = open_bus(app.broker_url)
        self.bus.subscribe("#")
        self.seen: list[list[dict[str, Any]]] = []

    def poll(self) -> list[dict[str, Any]]:
        for message in self.bus.receive(0.05):
            self.seen.append(proto.decode(message.body))
        return [event for batch in self.seen for event in batch]


def test_task_events_go_out_as_one_task_multi_array(app: Caraway) -> None:
    recorder = Recorder(app)
    dispatcher = EventDispatcher(app, hostname="w1@h")
    try:
        dispatcher.send("task-received", uuid="t1", name="add", args="(2, 2)", kwargs="{}")
        dispatcher.send("task-started", uuid="t1")
        dispatcher.send("task-succeeded", uuid="t1", result="4", runtime=0.01)
        assert dispatcher.flush(5)
        events = wait_until(lambda: len(recorder.poll()) >= 3 and recorder.poll())
    finally:
        dispatcher.close()
    assert len(recorder.seen) == 1
    assert [e["type"] for e in events] == ["task-received", "task-started", "task-succeeded"]
    assert [e["clock"] for e in events] == [1, 2, 3]
    assert all(e["hostname"] == "w1@h" for e in events)


def test_worker_events_are_sent_singly_with_software_fields(app: Caraway) -> None:
    recorder = Recorder(app)
    dispatcher = EventDispatcher(app, hostname="w1@h")
    try:
        dispatcher.send("worker-online", freq=2.0, active=0, processed=0, loadavg=[0.1, 0.2, 0.3])
        events = wait_until(recorder.poll, timeout=5)
    finally:
        dispatcher.close()
    assert isinstance(recorder.seen[0], list) and len(recorder.seen[0]) == 1
    online = events[0]
    assert online["type"] == "worker-online"
    assert online["sw_ident"] == "py-caraway" and online["sw_sys"]
    assert online["loadavg"] == [0.1, 0.2, 0.3]


def test_order_is_kept_across_task_and_worker_events(app: Caraway) -> None:
    recorder = Recorder(app)
    dispatcher = EventDispatcher(app, hostname="w1@h", flush_interval=10)
    try:
        dispatcher.send("task-started", uuid="a")
        dispatcher.send("worker-heartbeat", freq=2.0, active=1, processed=0, loadavg=[0, 0, 0])
        dispatcher.send("task-succeeded", uuid="a", result="1", runtime=0.1)
        assert dispatcher.flush(5)
        wait_until(lambda: len(recorder.poll()) >= 3)
    finally:
        dispatcher.close()
    assert [e["type"] for e in recorder.poll()] == [
        "task-started",
        "worker-heartbeat",
        "task-succeeded",
    ]


def test_a_disabled_dispatcher_sends_nothing_and_can_be_enabled(app: Caraway) -> None:
    recorder = Recorder(app)
    dispatcher = EventDispatcher(app, hostname="w1@h", enabled=False)
    try:
        assert dispatcher.send("task-started", uuid="x") is None
        dispatcher.enabled = True
        assert dispatcher.send("task-started", uuid="y") is not None
        assert dispatcher.flush(5)
        wait_until(recorder.poll)
    finally:
        dispatcher.close()
    assert [e["uuid"] for e in recorder.poll()] == ["y"]


def test_group_limits_sending_to_worker_events(app: Caraway) -> None:
    dispatcher = EventDispatcher(app, hostname="w1@h", group="worker")
    try:
        assert dispatcher.send("task-started", uuid="x") is None
        assert dispatcher.send("worker-heartbeat", freq=2.0) is not None
    finally:
        dispatcher.close()


class _FlakyBus(EventBus):
    fail = True
    published: list[str] = []

    def publish(self, message: Message, *, routing_key: str) -> None:
        if _FlakyBus.fail:
            raise BrokerError("broker down")
        _FlakyBus.published.append(routing_key)

    def subscribe(self, binding: str = "#") -> None:
        raise NotImplementedError

    def receive(self, timeout: float) -> list[Message]:
        raise NotImplementedError


def test_broker_failures_never_reach_the_caller_and_events_go_out_later(
    app: Caraway, caplog: pytest.LogCaptureFixture
) -> None:
    _FlakyBus.fail, _FlakyBus.published = True, []
    dispatcher = EventDispatcher(
        app, hostname="w1@h", flush_interval=0.02, bus_factory=lambda a: _FlakyBus("memory://")
    )
    try:
        started = time.perf_counter()
        dispatcher.send("worker-online", freq=2.0)
        assert time.perf_counter() - started < 0.05
        assert not dispatcher.flush(0.3)
        wait_until(lambda: "cannot send events" in caplog.text)
        _FlakyBus.fail = False
        assert dispatcher.flush(5)
    finally:
        dispatcher.close()
    assert _FlakyBus.published == ["worker.online"]


def test_send_is_cheap_for_a_burst_of_task_events(app: Caraway) -> None:
    dispatcher = EventDispatcher(app, hostname="w1@h")
    try:
        started = time.perf_counter()
        for n in range(2000):
            dispatcher.send("task-started", uuid=str(n))
        elapsed = time.perf_counter() - started
        assert dispatcher.flush(10)
    finally:
        dispatcher.close()
    # generous: the point is that no send waits for the broker (2000 round trips would)
    assert elapsed < 1.0


def test_task_sent_is_sent_singly_only_when_the_setting_is_on(app: Caraway) -> None:
    recorder = Recorder(app)
    send_task_sent(app, {"uuid": "off"})
    app.conf.task_send_sent_event = True
    send_task_sent(app, {"uuid": "on", "name": "add"})
    events = wait_until(recorder.poll, timeout=5)
    assert [(e["type"], e["uuid"]) for e in events] == [("task-sent", "on")]
    assert events[0]["hostname"].startswith("gen")
    assert len(recorder.seen[0]) == 1


def test_receiver_expands_batches_and_stamps_local_receipt(app: Caraway) -> None:
    receiver = EventReceiver(app)
    got: list[dict[str, Any]] = []

    def capture() -> None:
        got.extend(receiver.itercapture(limit=3, timeout=10))

    thread = threading.Thread(target=capture)
    thread.start()
    dispatcher = EventDispatcher(app, hostname="w1@h")
    try:
        assert receiver.wait_connected(5)
        dispatcher.send("task-received", uuid="r", name="n")
        dispatcher.send("task-started", uuid="r")
        dispatcher.send("worker-heartbeat", freq=2.0)
        assert dispatcher.flush(5)
        thread.join(10)
    finally:
        receiver.stop()
        dispatcher.close()
        thread.join(5)
    assert sorted(e["type"] for e in got) == ["task-received", "task-started", "worker-heartbeat"]
    assert all("local_received" in e for e in got)
    assert receiver.clock.value > 3


def test_receiver_capture_calls_handlers_by_type_and_wildcard(app: Caraway) -> None:
    seen: list[str] = []
    receiver = EventReceiver(
        app,
        handlers={
            "task-started": lambda e: seen.append("started"),
            "*": lambda e: seen.append(e["type"]),
        },
    )
    thread = threading.Thread(target=receiver.capture, kwargs={"limit": 2, "timeout": 10})
    thread.start()
    dispatcher = EventDispatcher(app, hostname="w1@h")
    try:
        assert receiver.wait_connected(5)
        dispatcher.send("task-started", uuid="1")
        dispatcher.send("task-failed", uuid="1", exception="E()", traceback="tb")
        dispatcher.flush(5)
        thread.join(10)
    finally:
        receiver.stop()
        dispatcher.close()
        thread.join(5)
    assert seen == ["started", "task-failed"]


def test_itercapture_ends_at_its_timeout_without_events(app: Caraway) -> None:
    started = time.monotonic()
    assert list(EventReceiver(app).itercapture(timeout=0.3)) == []
    assert time.monotonic() - started < 2


def test_a_worker_consumer_publishes_full_batches_itself_and_never_waits_on_failure(
    app: Caraway,
) -> None:
    """``caller_flushes``: the consumer's thread publishes each full batch (no handing the GIL
    to the flusher mid-drain); with the broker down it leaves retries to the flusher."""
    from caraway.events.dispatcher import BATCH_SIZE

    publishers: list[int] = []

    class _Bus(_FlakyBus):
        def publish(self, message: Message, *, routing_key: str) -> None:
            publishers.append(threading.get_ident())
            super().publish(message, routing_key=routing_key)

    _FlakyBus.fail, _FlakyBus.published = False, []
    dispatcher = EventDispatcher(
        app,
        hostname="w1@h",
        flush_interval=30.0,  # the flusher's timer stays out of the way
        bus_factory=lambda a: _Bus("memory://"),
        caller_flushes=True,
    )
    try:
        for n in range(BATCH_SIZE):
            dispatcher.send("task-started", uuid=str(n))
        assert publishers == [threading.get_ident()], "published by the caller, at once"
        _FlakyBus.fail = True
        started = time.perf_counter()
        for n in range(3 * BATCH_SIZE):
            dispatcher.send("task-started", uuid=f"down-{n}")
        assert time.perf_counter() - started < 0.5, "no pause in the caller"
        assert len(publishers) == 2, "one try, then the flusher's business for a while"
        _FlakyBus.fail = False
        assert dispatcher.flush(5)
    finally:
        dispatcher.close()
    assert _FlakyBus.published == ["task.multi"] * 4  # 500 at once, then 1,500 in three
