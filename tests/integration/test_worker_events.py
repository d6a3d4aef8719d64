"""A real caraway worker's events (``-E``) on SQLite, Redis and RabbitMQ, end to end.

caraway's EventReceiver (and a raw tap on the ``task.multi`` routing key) watch a prefork
worker: worker-online, heartbeats every 2 s, task events batched as ``task.multi``, and
``control.disable_events()/enable_events()`` switching task events off and on while the
heartbeats go on, as with Celery. Each test has its own queue, event exchange and (Redis,
db 15) key prefix, removed afterwards; a broker that does not answer skips locally and
fails in CI.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis

from caraway.app import Caraway
from caraway.brokers.contracts import EventBus
from caraway.events.dispatcher import bus_for
from caraway.events.receiver import EventReceiver
from caraway.protocol import events as proto
from tests.helpers import PROJ_TASKS, Worker, wait_until, write_project

pytestmark = [pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/15"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

EVENTS_APP = """
import itertools
import json
import os
from caraway import Caraway

app = Caraway('proj', broker=os.environ['TEST_BROKER'], include=['proj.tasks'])
app.conf.update(
    task_default_queue=os.environ['TEST_QUEUE'],
    event_exchange=os.environ['TEST_EVENT_EXCHANGE'],
    broker_transport_options=json.loads(os.environ.get('TEST_TRANSPORT_OPTIONS') or '{}'),
)
"""


def _require(port: int, what: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as exc:
        if os.environ.get("CI"):
            raise RuntimeError(f"{what} must answer on port {port} in CI: {exc}") from exc
        pytest.skip(f"no {what} on port {port}: {exc}")


def _forget_proj() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def _cleanup_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _cleanup_amqp(queue: str, exchange: str) -> None:
    conn = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest")
    conn.connect()
    try:
        channel = conn.channel()
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        channel.exchange_delete(queue)
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def project(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """`proj` on the broker under test, importable here and by the worker it starts."""
    token = uuid.uuid4().hex[:10]
    queue, exchange, prefix = f"wev.{token}", f"celeryev.wev.{token}", f"wev{token}:"
    broker = {
        "sqlite": f"sqlite:///{tmp_path / 'broker.db'}",
        "redis": REDIS_URL,
        "amqp": AMQP_URL,
    }[request.param]
    if request.param == "redis":
        _require(6379, "Redis")
        monkeypatch.setenv("TEST_TRANSPORT_OPTIONS", json.dumps({"global_keyprefix": prefix}))
    elif request.param == "amqp":
        _require(5672, "RabbitMQ")
    write_project(tmp_path, app_source=EVENTS_APP, tasks_source=PROJ_TASKS)
    for name, value in [("TEST_BROKER", broker), ("TEST_QUEUE", queue),
                        ("TEST_EVENT_EXCHANGE", exchange)]:  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    _forget_proj()
    try:
        yield tmp_path
    finally:
        _forget_proj()
        if request.param == "redis":
            _cleanup_redis(prefix)
        elif request.param == "amqp":
            _cleanup_amqp(queue, exchange)


class Watch:
    """The EventReceiver in a thread, plus a raw tap counting events per task.multi message."""

    def __init__(self, app: Caraway) -> None:
        self.events: list[dict[str, Any]] = []
        self.batch_sizes: list[int] = []
        self.receiver = EventReceiver(app)
        self.tap: EventBus = bus_for(app)
        self._stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._receive, daemon=True),
            threading.Thread(target=self._tap, daemon=True),
        ]

    def _receive(self) -> None:
        for event in self.receiver.itercapture(timeout=120):
            self.events.append(event)

    def _tap(self) -> None:
        while not self._stopping.is_set():
            for message in self.tap.receive(0.2):
                self.batch_sizes.append(len(proto.decode(message.body)))

    def __enter__(self) -> Watch:
        self.tap.subscribe("task.multi")
        for thread in self.threads:
            thread.start()
        assert self.receiver.wait_connected(15), "the receiver did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.receiver.stop()
        self._stopping.set()
        for thread in self.threads:
            thread.join(10)
        self.tap.close()

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in list(self.events)
            if e["type"] == kind and all(e.get(k) == v for k, v in match.items())
        ]

    def kinds(self, task_id: str) -> list[str]:
        return [e["type"] for e in list(self.events) if e.get("uuid") == task_id]


def _tasks() -> Any:
    import proj.tasks  # type: ignore[import-not-found]  # written by the project fixture

    return proj.tasks


def _ran(path: Path, value: str) -> bool:
    return path.exists() and value in path.read_text().split()


def test_a_workers_events_arrive_batched_with_heartbeats_and_switch_at_run_time(
    project: Path,
) -> None:
    tasks = _tasks()
    app: Caraway = tasks.app
    name = f"wev{uuid.uuid4().hex[:6]}"
    worker = Worker(project, "-E", "-c", "1", name=name)
    with Watch(app) as watch:
        try:
            _events_on(watch, tasks, worker.wait_ready(), name, project / "ran.txt")
        finally:
            worker.stop()
        [online] = watch.of("worker-online")
        wait_until(lambda: watch.of("worker-offline", hostname=online["hostname"]),
                   timeout=15, message="worker-offline after the stop")  # fmt: skip


def _events_on(watch: Watch, tasks: Any, worker: Worker, name: str, ran: Path) -> None:
    [online] = wait_until(lambda: watch.of("worker-online"), timeout=20, message="online")
    hostname = online["hostname"]
    assert hostname.startswith(f"{name}@") and online["sw_ident"] == "py-caraway"

    sent = [tasks.add.delay(i, i).id for i in range(4)]
    failing = tasks.boom.delay("evented").id
    wait_until(lambda: watch.of("task-failed", uuid=failing), timeout=20, message="task-failed")
    for task_id in sent:
        wait_until(partial(watch.of, "task-succeeded", uuid=task_id), timeout=20,
                   message=f"task-succeeded for {task_id}")  # fmt: skip
        assert watch.kinds(task_id) == ["task-received", "task-started", "task-succeeded"]
    assert watch.kinds(failing) == ["task-received", "task-started", "task-failed"]
    [failed] = watch.of("task-failed", uuid=failing)
    assert failed["exception"] == "ValueError('evented')" and failed["hostname"] == hostname
    # every task event travelled in task.multi messages, some holding several events
    wait_until(lambda: sum(watch.batch_sizes) >= 15, timeout=10, message="the tapped batches")
    assert max(watch.batch_sizes) >= 2

    beats = wait_until(lambda: (b := watch.of("worker-heartbeat", hostname=hostname))[2:] and b,
                       timeout=15, message="three heartbeats")  # fmt: skip
    gaps = [b["timestamp"] - a["timestamp"] for a, b in itertools.pairwise(beats)]
    # the node beats 2 s after its last beat, late only by its loop tick under load
    assert all(1.9 <= gap <= 3.5 for gap in gaps), gaps
    assert beats[-1]["freq"] == 2.0 and len(beats[-1]["loadavg"]) == 3
    wait_until(lambda: watch.of("worker-heartbeat", hostname=hostname, processed=5),
               timeout=10, message="a heartbeat counting 5 processed")  # fmt: skip

    _switch_off_and_on(watch, tasks, app=tasks.app, hostname=hostname, ran=ran)


def _switch_off_and_on(watch: Watch, tasks: Any, *, app: Caraway, hostname: str, ran: Path) -> None:
    replies = app.control.disable_events(destination=[hostname], reply=True, timeout=5)
    assert replies == [{hostname: {"ok": "task events disabled"}}]
    # the node relays the switch to its consumer before replying, and the consumer applies
    # it before its next fetch (a fetch already waiting may bring one more task first): once
    # a probe sent after the reply has run, later tasks run with events off
    tasks.record.delay(str(ran), "probe")
    wait_until(lambda: _ran(ran, "probe"), timeout=20, message="the probe task to run")
    quiet = [tasks.add.delay(9, 9).id, tasks.boom.delay("quiet").id]
    quiet.append(tasks.record.delay(str(ran), "off").id)
    wait_until(lambda: _ran(ran, "off"), timeout=20, message="tasks to run with events off")
    # a heartbeat sent after they ran: the node still beats, and their events had time
    beats = len(watch.of("worker-heartbeat", hostname=hostname))
    wait_until(lambda: len(watch.of("worker-heartbeat", hostname=hostname)) >= beats + 2,
               timeout=10, message="heartbeats while task events are off")  # fmt: skip
    assert [e for e in list(watch.events) if e.get("uuid") in quiet] == []

    replies = app.control.enable_events(destination=[hostname], reply=True, timeout=5)
    assert replies == [{hostname: {"ok": "task events enabled"}}]
    # a fetch that was already waiting may bring one task before the switch is applied
    tasks.record.delay(str(ran), "probe-on")
    wait_until(lambda: _ran(ran, "probe-on"), timeout=20, message="the second probe to run")
    loud = tasks.add.delay(10, 10).id
    wait_until(lambda: watch.of("task-succeeded", uuid=loud, result="20"), timeout=20,
               message="task events again after enable_events")  # fmt: skip
    assert watch.kinds(loud) == ["task-received", "task-started", "task-succeeded"]
