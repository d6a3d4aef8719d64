"""Remote control of a real ``caraway -A proj worker -P solo`` on SQLite and on Redis.

The worker's supervisor polls its ControlServer; these tests talk to it through
``Control`` in this process. Redis runs on db 14 under a key prefix private to the test
(passed to the worker as CARAWAY_BROKER_TRANSPORT_OPTIONS).
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from caraway.app import Caraway
from caraway.control import Control
from tests.helpers import Worker, wait_until, write_project

pytestmark = [pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/14"


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(params=["sqlite", "redis"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(broker URL, key prefix) for the worker and the client."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'broker.db'}", ""
        return
    if not _redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"wctl{uuid.uuid4().hex[:10]}:"
    yield REDIS_URL, prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def worker(tmp_path: Path, broker: tuple[str, str]) -> Iterator[Worker]:
    url, prefix = broker
    write_project(tmp_path)
    env = {"TEST_BROKER": url, "TEST_BACKEND": "memory://"}
    if prefix:
        env["CARAWAY_BROKER_TRANSPORT_OPTIONS"] = json.dumps({"global_keyprefix": prefix})
    started = Worker(tmp_path, "-P", "solo", "-Q", "celery", env=env)
    try:
        yield started.wait_ready()
    finally:
        started.stop()


@pytest.fixture
def control(broker: tuple[str, str]) -> Iterator[Control]:
    url, prefix = broker
    app = Caraway("client", broker=url, backend="memory://")
    if prefix:
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
    client = Control(app)
    try:
        yield client
    finally:
        client.close()


def _hostname(control: Control) -> str:
    replies = wait_until(lambda: control.ping(timeout=1), timeout=15, message="a ping reply")
    (reply,) = replies
    (name,) = reply
    assert isinstance(name, str) and name.startswith("w1@")
    return name


def test_worker_answers_ping_stats_and_active_queues(worker: Worker, control: Control) -> None:
    name = _hostname(control)
    inspect = control.inspect(destination=[name], timeout=5)
    stats = inspect.stats()
    assert stats is not None and stats[name]["pid"] == worker.process.pid
    queues = inspect.active_queues()
    assert queues is not None and [q["name"] for q in queues[name]] == ["celery"]
    active = inspect.active()
    assert active == {name: []}


def test_worker_adds_a_consumer_and_sets_a_rate_limit(worker: Worker, control: Control) -> None:
    name = _hostname(control)
    control.add_consumer("extra", destination=[name], reply=True, timeout=5)
    queues = control.inspect(destination=[name], timeout=5).active_queues()
    assert queues is not None
    assert [q["name"] for q in queues[name]] == ["celery", "extra"]
    replies = control.rate_limit(
        "proj.tasks.add", "10/m", destination=[name], reply=True, timeout=5
    )
    assert replies == [{name: {"ok": "new rate limit set successfully"}}]


def test_worker_shuts_down_on_request(worker: Worker, control: Control) -> None:
    name = _hostname(control)
    control.shutdown(destination=[name])
    wait_until(lambda: worker.process.poll() is not None, timeout=20, message="worker exit")
    assert worker.process.returncode == 0, worker.log()
