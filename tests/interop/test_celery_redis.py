"""A real ``celery worker`` and a real caraway worker on one Redis, each serving the other's client.

Needs ``celery==5.7.0`` and ``packaging`` (test extra). Redis db 11 is ours alone, flushed
before and after each test. The Celery app module is written into tmp_path beside `proj`;
both declare the same task names, so either worker runs either client's messages.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from caraway import states
from tests.helpers import Worker, wait_until
from tests.integration.redisproj import clean_db, redis_project, require, tasks

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    # Celery 5.7's backend calls redis-py methods that redis-py 8 marks deprecated (setex)
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/11"

CELERY_APP = """
import os
import time

import redis
from celery import Celery

app = Celery('proj', broker=os.environ['TEST_BROKER'], backend=os.environ['TEST_BACKEND'])
app.conf.update(result_expires=3600, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)
_client = redis.Redis.from_url(os.environ['TEST_BROKER'])


@app.task(name='proj.tasks.add')
def add(x, y):
    return x + y


@app.task(name='proj.tasks.boom')
def boom(message='kaboom'):
    raise ValueError(message)


@app.task(name='proj.tasks.mark')
def mark(key, value):
    _client.sadd(key, value)
    _client.rpush(key + ':runs', value)
    _client.rpush(key + ':celery', value)
    return value
"""


class CeleryWorker:
    """``celery -A celeryproj worker -P solo`` in its own session; ``stop()`` always ends it."""

    def __init__(self, cwd: Path, *queues: str) -> None:
        self.logfile = cwd / "celery-worker.log"
        command = [
            sys.executable, "-m", "celery", "-A", "celeryproj", "worker", "-P", "solo",
            "-l", "info", "-n", "celery1@%h", "--without-mingle", "--without-gossip",
            "--without-heartbeat", "-Q", ",".join(queues or ("celery",)),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(cwd)}
        self._log = open(self.logfile, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self) -> CeleryWorker:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"celery worker exited early:\n{self.log()}")
            return " ready." in self.log()

        wait_until(ready, timeout=30, interval=0.1, message="celery worker to be ready")
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    try:
        importlib.import_module("celery")
        importlib.import_module("kombu.transport.redis")  # fails without 'packaging'
    except ImportError as exc:
        require(False, f"celery 5.7 with packaging is not installed: {exc}")
    yield from clean_db(URL)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: redis.Redis) -> Iterator[Path]:
    (tmp_path / "celeryproj.py").write_text(textwrap.dedent(CELERY_APP))
    sys.modules.pop("celeryproj", None)
    try:
        yield from redis_project(tmp_path, monkeypatch, URL)
    finally:
        sys.modules.pop("celeryproj", None)


@pytest.fixture
def celery_client(project: Path) -> Iterator[Any]:
    """The Celery app of ``celeryproj`` as a client in this process."""
    module = importlib.import_module("celeryproj")
    app = module.app
    try:
        yield module
    finally:
        if "backend" in app.__dict__:
            app.backend.result_consumer.stop()
            app.backend.client.close()
        module._client.close()
        app.close()


@pytest.fixture
def processes() -> Iterator[list[Worker | CeleryWorker]]:
    started: list[Worker | CeleryWorker] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def test_celery_client_tasks_run_on_a_caraway_worker_and_read_with_celery(
    project: Path, celery_client: Any, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(Worker(project, "-c", "1", "-Q", "celery,lopri").wait_ready())
    app = celery_client.app
    assert celery_client.add.delay(2, 2).get(timeout=10) == 4
    sent = time.monotonic()
    later = celery_client.add.apply_async((3, 4), countdown=2)
    low = celery_client.add.apply_async((5, 6), queue="lopri")
    assert low.get(timeout=10) == 11
    assert later.get(timeout=15) == 7
    assert time.monotonic() - sent >= 1.9
    failing = celery_client.boom.delay("from celery")
    with pytest.raises(ValueError, match="from celery"):
        failing.get(timeout=10)
    assert app.AsyncResult(failing.id).state == "FAILURE"
    assert "ValueError" in (app.AsyncResult(failing.id).traceback or "")


def test_caraway_client_tasks_run_on_a_celery_worker_and_read_with_caraway(
    project: Path, celery_client: Any, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(CeleryWorker(project, "celery", "lopri").wait_ready())
    proj = tasks()
    assert proj.add.delay(2, 2).get(timeout=10) == 4
    sent = time.monotonic()
    later = proj.add.apply_async((3, 4), countdown=2)
    low = proj.add.apply_async((5, 6), queue="lopri")
    assert low.get(timeout=10) == 11
    assert later.get(timeout=15) == 7
    assert time.monotonic() - sent >= 1.9
    failing = proj.boom.delay("from caraway")
    with pytest.raises(ValueError, match="from caraway"):
        failing.get(timeout=10)
    assert failing.state == states.FAILURE
    assert "Task proj.tasks.add" in processes[0].log()


def test_mixed_fleet_drains_a_thousand_tasks_with_none_lost(
    project: Path,
    celery_client: Any,
    processes: list[Worker | CeleryWorker],
    db: redis.Redis,
) -> None:
    processes.append(CeleryWorker(project, "celery").wait_ready())
    processes.append(Worker(project, "-c", "1").wait_ready())
    proj = tasks()
    # half from each client, interleaved, so both kinds of envelope meet both workers
    for n in range(0, 1000, 2):
        proj.mark.apply_async(("fleet", n), ignore_result=True)
        celery_client.mark.apply_async(("fleet", n + 1), ignore_result=True)
    wait_until(lambda: db.scard("fleet") == 1000, timeout=60, interval=0.1,
               message="1,000 distinct tasks to run")  # fmt: skip
    assert db.llen("fleet:runs") == 1000  # none ran twice
    by_celery = db.llen("fleet:celery")
    assert 0 < by_celery < 1000, "both workers took part"
    wait_until(lambda: db.hlen("unacked") == 0, timeout=10, message="unacked to drain")
    assert db.llen("celery") == 0
