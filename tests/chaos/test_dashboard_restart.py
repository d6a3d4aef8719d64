"""The dashboard across a restart of its Redis: it keeps serving, then shows new events.

A private ``redis-server`` (started by the test, stopped by pid) carries a real caraway
worker with ``-E`` and the dashboard's event receiver. While Redis is down the dashboard
answers from its history and says it is disconnected; once Redis is back on the same port
it resubscribes by itself and a task sent then appears with its final state.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Worker, wait_until
from tests.integration.redisproj import RedisServer, redis_project, tasks

pytestmark = [pytest.mark.redis, pytest.mark.slow]

pytest.importorskip("uvicorn")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    instance = RedisServer(tmp_path / "redis").start()
    try:
        yield instance
    finally:
        instance.stop(signal.SIGKILL)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: RedisServer) -> Iterator[Path]:
    yield from redis_project(tmp_path / "work", monkeypatch, server.url)


@pytest.fixture
def dashboard_url(project: Path) -> Iterator[str]:
    from caraway.dashboard.server import DashboardServer, create_dashboard

    app = tasks().app
    dashboard = DashboardServer(create_dashboard(app, poll_interval=0.5)).start()
    try:
        yield dashboard.url
    finally:
        dashboard.stop()


@pytest.fixture
def worker(project: Path) -> Iterator[Worker]:
    started = Worker(project, "-E", "-c", "1")
    try:
        yield started.wait_ready()
    finally:
        started.stop()


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=5) as response:
        assert response.status == 200
        body = response.read()
        return json.loads(body) if path.startswith("/api") else body


def _succeeded(url: str, task_id: str) -> bool:
    listed = get(url, "/api/tasks?state=SUCCESS")["tasks"]
    return any(t["uuid"] == task_id for t in listed)


def _online(url: str) -> list[dict[str, Any]]:
    return [w for w in get(url, "/api/workers") if w["status"] == "online"]


def test_the_dashboard_serves_through_a_redis_restart_and_shows_new_events(
    server: RedisServer, dashboard_url: str, worker: Worker
) -> None:
    url = dashboard_url
    wait_until(lambda: get(url, "/api/status")["connected"], timeout=15, message="subscribed")
    [node] = wait_until(lambda: _online(url), timeout=20, message="the worker online")
    before = tasks().add.delay(1, 1)
    wait_until(lambda: _succeeded(url, before.id), timeout=20, message="a task before the stop")

    server.stop()
    wait_until(lambda: not get(url, "/api/status")["connected"], timeout=15,
               message="the dashboard to notice the broker is gone")  # fmt: skip
    # still serving: the page, and the history it had
    assert b"<html" in get(url, "/").lower()
    assert [t["uuid"] for t in get(url, "/api/tasks")["tasks"]] == [before.id]
    assert get(url, f"/api/tasks/{before.id}")["state"] == "SUCCESS"
    assert [w["hostname"] for w in get(url, "/api/workers")] == [node["hostname"]]

    server.start()
    wait_until(lambda: get(url, "/api/status")["connected"], timeout=30, interval=0.2,
               message="the dashboard to resubscribe")  # fmt: skip
    after = _send_when_broker_takes_it()
    wait_until(lambda: _succeeded(url, after), timeout=40, interval=0.2,
               message="a task sent after the restart on the dashboard")  # fmt: skip
    detail = get(url, f"/api/tasks/{after}")
    assert detail["worker"] == node["hostname"] and detail["result"] == "4"
    assert {"received", "started", "succeeded"} <= set(detail["times"])
    wait_until(lambda: _online(url), timeout=15, message="the worker online again")


def _send_when_broker_takes_it() -> str:
    sent: list[str] = []

    def send() -> bool:
        # the producer's pooled connection may still be the dead one; one retry suffices
        try:
            sent.append(tasks().add.delay(2, 2).id)
        except Exception:
            return False
        return True

    wait_until(send, timeout=20, interval=0.5, message="the broker to take a task")
    return sent[0]
