"""A real Celery 5.7 worker (``-E -P solo``) watched through caraway's dashboard JSON API.

The dashboard's app and a Celery client share Redis db 5 under a key prefix private to
the test (kombu prefixes event channels too). The Celery client sends one task that
succeeds and one that fails; the dashboard must show the Celery node online and both
tasks with their final states, result and traceback, all learnt from Celery's events.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway.app import Caraway
from tests.helpers import wait_until
from tests.interop.celeryproc import CeleryWorker, redis_prefix, require_celery, write_celery_app

pytestmark = [pytest.mark.slow, pytest.mark.redis]

pytest.importorskip("uvicorn")

REDIS_URL = "redis://127.0.0.1:6379/5"  # the dashboard's tests' db


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from redis_prefix(REDIS_URL, "idash")


@pytest.fixture
def dashboard_url(prefix: str) -> Iterator[str]:
    """caraway's dashboard on the test's Redis prefix, served on a free port."""
    from caraway.dashboard.server import DashboardServer, create_dashboard

    app = Caraway("cdashcar", broker=REDIS_URL)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    server = DashboardServer(create_dashboard(app, poll_interval=1.0))
    try:
        server.start()
        url = server.url
        # events are fire-and-forget: subscribe before the Celery worker says it is online
        wait_until(lambda: get(url, "/api/status")["connected"], timeout=15,
                   message="the dashboard's event receiver to subscribe")  # fmt: skip
        yield url
    finally:
        server.stop()
        app.close()


@pytest.fixture
def celery_worker(tmp_path: Path, prefix: str) -> Iterator[str]:
    """``celery worker -E -P solo`` on the test's prefix; yields its hostname."""
    write_celery_app(
        tmp_path, "cdashapp", tasks=("add", "boom"), main="cdashapp", names="tasks", results=False
    )
    hostname = f"cdash{uuid.uuid4().hex[:6]}@box"
    env = {"TEST_BROKER": REDIS_URL, "TEST_PREFIX": prefix}
    worker = CeleryWorker(tmp_path, "cdashapp", hostname=hostname, events=True, env=env)
    try:
        yield hostname
    finally:
        worker.stop()


@pytest.fixture
def celery_client(prefix: str) -> Iterator[Any]:
    client = require_celery().Celery("cdashclient", broker=REDIS_URL)
    client.conf.broker_transport_options = {"global_keyprefix": prefix}
    try:
        yield client
    finally:
        client.close()  # no result backend to close: the app has none


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=5) as response:
        return json.loads(response.read())


def _worker(url: str, hostname: str) -> dict[str, Any] | None:
    return next((w for w in get(url, "/api/workers") if w["hostname"] == hostname), None)


def _task_in(url: str, task_id: str, state: str) -> dict[str, Any] | None:
    listed = get(url, f"/api/tasks?state={state}")["tasks"]
    return next((t for t in listed if t["uuid"] == task_id), None)


def test_the_dashboard_shows_a_celery_workers_node_and_tasks(
    dashboard_url: str, celery_worker: str, celery_client: Any
) -> None:
    url, hostname = dashboard_url, celery_worker

    def online() -> dict[str, Any] | None:
        node = _worker(url, hostname)
        return node if node and node["status"] == "online" and node["loadavg"] else None

    # loadavg only comes with worker-online/heartbeat events, never from remote control
    wait_until(online, timeout=30, interval=0.2, message="the Celery node online")

    ok = celery_client.send_task("tasks.add", (2, 3))
    bad = celery_client.send_task("tasks.boom", ("from celery",))

    succeeded = wait_until(lambda: _task_in(url, ok.id, "SUCCESS"), timeout=30, interval=0.2,
                           message="the Celery task SUCCESS on the dashboard")  # fmt: skip
    assert (succeeded["name"], succeeded["args"]) == ("tasks.add", "(2, 3)")
    assert succeeded["result"] == "5"
    assert succeeded["worker"] == hostname and succeeded["runtime"] is not None
    wait_until(lambda: _task_in(url, bad.id, "FAILURE"), timeout=30, interval=0.2,
               message="the Celery task FAILURE on the dashboard")  # fmt: skip

    detail = get(url, f"/api/tasks/{bad.id}")
    assert detail["state"] == "FAILURE" and detail["name"] == "tasks.boom"
    assert detail["exception"] == "ValueError('from celery')"
    assert "Traceback (most recent call last)" in detail["traceback"]
    assert "raise ValueError(message)" in detail["traceback"]
    assert {"received", "started", "failed"} <= set(detail["times"])

    node = _worker(url, hostname)
    assert node is not None and (node["succeeded"], node["failed"]) == (1, 1)
    assert node["status"] == "online"
