"""Events on real brokers: a dispatcher in another process, the receiver in this one.

SQLite uses a file in tmp_path; Redis uses db 15 with a key (and channel) prefix private to
each test; RabbitMQ uses an event exchange private to each test, deleted afterwards. A
broker that does not answer skips its tests locally and fails them when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis

from caraway.app import Caraway
from caraway.events.dispatcher import EventDispatcher, bus_for
from caraway.events.receiver import EventReceiver
from caraway.events.state import State
from tests.helpers import ROOT, wait_until

REDIS_URL = "redis://127.0.0.1:6379/15"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

SENDER = """
import json, sys
from caraway.app import Caraway
from caraway.events.dispatcher import EventDispatcher

broker, options, exchange = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
app = Caraway('evsender', broker=broker)
app.conf.broker_transport_options = options
app.conf.event_exchange = exchange
d = EventDispatcher(app, hostname='sender@h')
d.send('worker-online', freq=2.0, active=0, processed=0, loadavg=[0.0, 0.0, 0.0])
d.send('task-received', uuid='t1', name='proj.add', args='(2, 2)', kwargs='{}',
       root_id='t1', parent_id=None, retries=0, eta=None, expires=None)
d.send('task-started', uuid='t1')
d.send('task-succeeded', uuid='t1', result='4', runtime=0.01)
assert d.flush(10), 'events not flushed'
d.close()
"""


def _require(host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        if os.environ.get("CI"):
            raise RuntimeError(f"{what} must answer at {host}:{port} in CI: {exc}") from exc
        pytest.skip(f"no {what} at {host}:{port}: {exc}")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    _require("127.0.0.1", 6379, "Redis")
    yield f"ev{uuid.uuid4().hex[:10]}:"
    # pub/sub leaves no keys behind; nothing to delete


@pytest.fixture
def amqp_exchange() -> Iterator[str]:
    _require("127.0.0.1", 5672, "RabbitMQ")
    name = f"celeryev.test.{uuid.uuid4().hex[:10]}"
    yield name
    conn = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest")
    conn.connect()
    try:
        conn.channel().exchange_delete(name)
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "redis", "amqp", "postgresql", "redis+cluster"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Caraway]:
    if request.param == "sqlite":
        application = Caraway("evt", broker=f"sqlite:///{tmp_path / 'broker.db'}")
    elif request.param == "redis+cluster":
        application = Caraway("evt", broker=request.getfixturevalue("cluster_broker_url"))
    elif request.param == "postgresql":
        application = Caraway("evt", broker=request.getfixturevalue("pg_broker_url"))
    elif request.param == "redis":
        application = Caraway("evt", broker=REDIS_URL)
        application.conf.broker_transport_options = {
            "global_keyprefix": request.getfixturevalue("redis_prefix")
        }
    else:
        application = Caraway("evt", broker=AMQP_URL)
        application.conf.event_exchange = request.getfixturevalue("amqp_exchange")
    try:
        yield application
    finally:
        application.close()


class Capture:
    """A receiver running in a thread, collecting events into a list."""

    def __init__(self, app: Caraway, **kwargs: Any) -> None:
        self.receiver = EventReceiver(app, **kwargs)
        self.events: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for event in self.receiver.itercapture(timeout=60):
            self.events.append(event)

    def __enter__(self) -> Capture:
        self.thread.start()
        assert self.receiver.wait_connected(10), "receiver did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.receiver.stop()
        self.thread.join(10)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def _send_from_another_process(app: Caraway) -> None:
    options = json.dumps(dict(app.conf.broker_transport_options))
    subprocess.run(
        [sys.executable, "-c", SENDER, app.broker_url, options, app.conf.event_exchange],
        cwd=ROOT,
        check=True,
        timeout=60,
    )


def test_events_from_another_process_arrive_batched_and_single(app: Caraway) -> None:
    state = State()
    with Capture(app) as capture:
        _send_from_another_process(app)
        wait_until(lambda: len(capture.events) >= 4, timeout=15, message="4 events")
    for event in capture.events:
        state.event(event)
    assert capture.types() == ["worker-online", "task-received", "task-started", "task-succeeded"]
    assert capture.events[1]["hostname"] == "sender@h"
    task = state.task_snapshot("t1")
    assert task is not None and task["state"] == "SUCCESS" and task["result"] == "4"
    assert state.workers_snapshot()[0]["status"] == "online"


def test_a_receiver_sees_only_what_is_sent_after_it_subscribed(app: Caraway) -> None:
    dispatcher = EventDispatcher(app, hostname="early@h")
    try:
        dispatcher.send("worker-heartbeat", freq=2.0)
        assert dispatcher.flush(10)
        with Capture(app) as capture:
            dispatcher.send("worker-heartbeat", freq=2.0, processed=7)
            assert dispatcher.flush(10)
            wait_until(lambda: capture.events, timeout=10)
    finally:
        dispatcher.close()
    assert [e.get("processed") for e in capture.events] == [7]


def test_redis_events_use_celerys_channels(redis_prefix: str) -> None:
    app = Caraway("evt", broker=REDIS_URL)
    app.conf.broker_transport_options = {"global_keyprefix": redis_prefix}
    raw = redis.Redis.from_url(REDIS_URL)
    pubsub = raw.pubsub()  # type: ignore[no-untyped-call]
    try:
        pubsub.psubscribe(f"{redis_prefix}/15.celeryev/*")
        wait_until(lambda: (m := pubsub.get_message(timeout=0.1)) and m["type"] == "psubscribe")
        _send_from_another_process(app)
        seen: list[tuple[str, dict[str, Any]]] = []

        def collect() -> bool:
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                seen.append((message["channel"].decode(), json.loads(message["data"])))
            return len(seen) >= 2

        wait_until(collect, timeout=15)
    finally:
        pubsub.close()
        raw.close()
        app.close()
    channels = [channel for channel, _ in seen]
    assert channels == [
        f"{redis_prefix}/15.celeryev/worker.online",
        f"{redis_prefix}/15.celeryev/task.multi",
    ]
    envelope = seen[1][1]
    assert envelope["properties"]["delivery_info"] == {
        "exchange": "celeryev",
        "routing_key": "task.multi",
    }
    assert envelope["headers"] == {"hostname": "sender@h"}
    assert envelope["properties"]["delivery_mode"] == 1


def test_redis_receiver_reconnects_after_its_connection_is_killed(redis_prefix: str) -> None:
    app = Caraway("evt", broker=REDIS_URL)
    app.conf.broker_transport_options = {"global_keyprefix": redis_prefix}
    admin = redis.Redis.from_url(REDIS_URL)
    dispatcher = EventDispatcher(app, hostname="w@h")
    try:
        with Capture(app) as capture:
            bus: Any = capture.receiver._bus
            address = bus._pubsub.connection._sock.getsockname()
            killed = admin.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "ADDR", f"{address[0]}:{address[1]}"
            )
            assert killed

            def delivered() -> bool:
                # heartbeats until one arrives over the new subscription
                dispatcher.send("worker-heartbeat", freq=2.0)
                dispatcher.flush(5)
                return bool(capture.events)

            wait_until(delivered, timeout=20, interval=0.3, message="an event after reconnect")
            assert capture.receiver._bus is not bus, "the receiver never lost its connection"
    finally:
        dispatcher.close()
        admin.close()
        app.close()


def test_amqp_receiver_queue_is_exclusive_and_expiring(amqp_exchange: str) -> None:
    app = Caraway("evt", broker=AMQP_URL)
    app.conf.event_exchange = amqp_exchange
    bus: Any = bus_for(app)
    try:
        bus.subscribe("#")
        assert bus.queue.startswith("celeryev.")
        # a second declaration with Celery's flags succeeds only if ours were the same
        bus._chan().queue_declare(
            bus.queue,
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments={"x-message-ttl": 5000, "x-expires": 60000},
        )
    finally:
        bus.close()
