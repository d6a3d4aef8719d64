"""Events across Celery 5.7 and caraway on Redis: each side reads the other's events.

A real ``celery worker -E -P solo`` is watched by caraway's EventReceiver and State
(online, heartbeats, a task's received/started/succeeded, offline on shutdown); Celery's
own ``app.events.Receiver`` and ``State`` read events from caraway's EventDispatcher.
Redis db 15 under a key prefix private to each test (kombu prefixes channels too).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from caraway.app import Caraway
from caraway.events.dispatcher import EventDispatcher
from caraway.events.receiver import EventReceiver
from caraway.events.state import State
from tests.helpers import wait_until
from tests.interop.celeryproc import CeleryWorker, redis_prefix, stop_process, write_celery_app

pytestmark = [pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/15"

CELERY_RECEIVER = """
import json, os
from celery import Celery

app = Celery('cevrecv', broker=os.environ['TEST_BROKER'])
app.conf.broker_transport_options = {'global_keyprefix': os.environ['TEST_PREFIX']}
state = app.events.State()


def on_event(event):
    state.event(event)
    print(json.dumps({'type': event['type'], 'hostname': event.get('hostname')}), flush=True)
    if event['type'] == 'task-succeeded':
        task = state.tasks.get(event['uuid'])
        worker = state.workers.get(event['hostname'])
        print(json.dumps({
            'final': True, 'state': task.state, 'name': task.name, 'result': task.result,
            'runtime': task.runtime, 'alive': bool(worker and worker.alive),
        }), flush=True)
        raise SystemExit(0)


with app.connection_for_read() as conn:
    app.events.Receiver(conn, handlers={'*': on_event}).capture(limit=None, timeout=60)
"""


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from redis_prefix(REDIS_URL, "iev")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_celery_app(tmp_path, "cevapp", main="cevapp", names="tasks", results=False)
    (tmp_path / "cevrecv.py").write_text(textwrap.dedent(CELERY_RECEIVER))
    return tmp_path


def _env(project: Path, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(project),
        "TEST_BROKER": REDIS_URL,
        "TEST_PREFIX": prefix,
    }


def _caraway_app(prefix: str) -> Caraway:
    app = Caraway("cevcar", broker=REDIS_URL)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    return app


class Watch:
    """caraway's receiver in a thread, feeding a State and keeping every event."""

    def __init__(self, app: Caraway) -> None:
        self.state = State()
        self.events: list[dict[str, Any]] = []
        self.receiver = EventReceiver(app)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for event in self.receiver.itercapture(timeout=120):
            self.events.append(event)
            self.state.event(event)

    def seen(self, kind: str, **match: Any) -> bool:
        return any(
            e["type"] == kind and all(e.get(k) == v for k, v in match.items()) for e in self.events
        )


def test_caraway_state_follows_a_celery_worker(project: Path, prefix: str) -> None:
    app = _caraway_app(prefix)
    watch = Watch(app)
    watch.thread.start()
    hostname = f"cev{uuid.uuid4().hex[:6]}@box"
    worker = None
    try:
        assert watch.receiver.wait_connected(10)
        env = {"TEST_BROKER": REDIS_URL, "TEST_PREFIX": prefix}
        worker = CeleryWorker(project, "cevapp", hostname=hostname, events=True, env=env)
        wait_until(lambda: watch.seen("worker-online", hostname=hostname), timeout=30)
        wait_until(lambda: watch.seen("worker-heartbeat", hostname=hostname), timeout=15)
        result = app.send_task("tasks.add", (2, 2))
        wait_until(lambda: watch.seen("task-succeeded", uuid=result.id), timeout=20)
        task = watch.state.task_snapshot(result.id)
        assert task is not None
        assert (task["state"], task["name"], task["args"], task["result"]) == (
            "SUCCESS", "tasks.add", "(2, 2)", "4",
        )  # fmt: skip
        assert task["worker"] == hostname and task["received"] and task["started"]
        node = next(w for w in watch.state.workers_snapshot() if w["hostname"] == hostname)
        assert node["status"] == "online" and node["sw_ident"] == "py-celery"
        worker.stop()
        wait_until(lambda: watch.seen("worker-offline", hostname=hostname), timeout=20)
        node = next(w for w in watch.state.workers_snapshot() if w["hostname"] == hostname)
        assert node["status"] == "offline"
    finally:
        if worker is not None:
            worker.stop()
        watch.receiver.stop()
        watch.thread.join(10)
        app.close()


def _lines(stream: IO[str], into: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        with contextlib.suppress(ValueError):
            into.put(json.loads(line))


def test_celerys_receiver_and_state_read_caraway_events(project: Path, prefix: str) -> None:
    app = _caraway_app(prefix)
    dispatcher = EventDispatcher(app, hostname="caraway-node@box")
    receiver = subprocess.Popen(
        [sys.executable, str(project / "cevrecv.py")], cwd=project, env=_env(project, prefix),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(receiver.stdout, lines), daemon=True)
    reader.start()
    try:

        def subscribed() -> bool:
            # Celery's receiver subscribes some time after it starts: beat until it hears one
            dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0, loadavg=[0, 0, 0])
            dispatcher.flush(5)
            return not lines.empty()

        wait_until(subscribed, timeout=30, interval=0.2, message="celery's receiver to hear us")
        dispatcher.send("task-received", uuid="ct1", name="proj.add", args="(2, 2)",
                        kwargs="{}", root_id="ct1", parent_id=None, retries=0, eta=None,
                        expires=None)  # fmt: skip
        dispatcher.send("task-started", uuid="ct1")
        dispatcher.send("task-succeeded", uuid="ct1", result="4", runtime=0.01)
        assert dispatcher.flush(5)
        final: dict[str, Any] = {}

        def finished() -> bool:
            while not lines.empty():
                item = lines.get()
                if item.get("final"):
                    final.update(item)
            return bool(final)

        wait_until(finished, timeout=20, message="celery's State to see the task succeed")
        assert final == {
            "final": True, "state": "SUCCESS", "name": "proj.add", "result": "4",
            "runtime": 0.01, "alive": True,
        }  # fmt: skip
    finally:
        dispatcher.close()
        stop_process(receiver)
        reader.join(5)
        if receiver.stdout is not None:
            receiver.stdout.close()
        app.close()
