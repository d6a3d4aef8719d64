"""Celery 5.7 and caraway on one RabbitMQ: the seed's example, and each serving the other.

The apps use the seed's broker URL exactly (``pyamqp://guest@localhost//``) with a queue
private to the test (``task_default_queue`` from ``TEST_QUEUE``, deleted afterwards) and
results in Redis db 14 (flushed afterwards). Workers are real processes, always stopped.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import amqp
import pytest
import redis

from caraway import states
from caraway.backends.rpc import RPCBackend
from caraway.protocol.results import decode_document
from tests.helpers import Worker, wait_until

pytestmark = [pytest.mark.amqp, pytest.mark.redis, pytest.mark.slow]

BACKEND = "redis://localhost/14"

# The seed's proj/celery.py with caraway in place of celery, plus a private queue.
SEED_APP = """
from __future__ import absolute_import, unicode_literals
import os
from caraway import Caraway

app = Caraway('proj',
             broker='pyamqp://guest@localhost//',
             backend=os.environ.get('TEST_BACKEND', 'redis://localhost'),
             include=['proj.tasks'])

# Optional configuration, see the application user guide.
app.conf.update(
    result_expires=3600,
    task_default_queue=os.environ['TEST_QUEUE'],
)

if __name__ == '__main__':
    app.start()
"""

SEED_TASKS = """
from __future__ import absolute_import, unicode_literals
import os
import time
from .caraway import app


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task
def boom(message='kaboom'):
    raise ValueError(message)


@app.task(acks_late=True)
def late_once(marker, seconds):
    # first run records itself and sleeps (the test kills the worker); later runs return
    runs = open(marker).read() if os.path.exists(marker) else ''
    open(marker, 'a').write('x')
    if not runs:
        time.sleep(seconds)
    return len(runs) + 1


@app.task(acks_late=True)
def tick(seconds):
    time.sleep(seconds)
    return seconds
"""

CELERY_APP = """
import os
from celery import Celery

app = Celery('proj', broker='pyamqp://guest@localhost//',
             backend=os.environ.get('TEST_CELERY_BACKEND') or os.environ['TEST_BACKEND'])
app.conf.update(result_expires=3600, task_default_queue=os.environ['TEST_QUEUE'],
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name='proj.tasks.add')
def add(x, y):
    return x + y


@app.task(name='proj.tasks.boom')
def boom(message='kaboom'):
    raise ValueError(message)
"""


class CeleryWorker:
    """``celery -A celeryproj worker -P solo`` in its own session; ``stop()`` always ends it."""

    def __init__(self, cwd: Path, queue: str, env: dict[str, str]) -> None:
        self.logfile = cwd / "celery-worker.log"
        command = [
            sys.executable, "-m", "celery", "-A", "celeryproj", "worker", "-P", "solo",
            "-l", "info", "-n", f"celery-{queue}@%h", "--without-mingle", "--without-gossip",
            "--without-heartbeat", "-Q", queue,
        ]  # fmt: skip
        self._log = open(self.logfile, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(cwd), **env},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
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


def _delete_queue(name: str) -> None:
    conn = amqp.Connection("127.0.0.1:5672", connect_timeout=2)
    conn.connect()
    try:
        channel = conn.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)
    finally:
        conn.close()


@pytest.fixture
def queue() -> Iterator[str]:
    try:
        _delete_queue("probe-" + uuid.uuid4().hex)
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no RabbitMQ at 127.0.0.1:5672: {exc!r}")
    name = f"seed-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        _delete_queue(name)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queue: str) -> Iterator[Path]:
    package = tmp_path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "caraway.py").write_text(textwrap.dedent(SEED_APP))
    (package / "tasks.py").write_text(textwrap.dedent(SEED_TASKS))
    (tmp_path / "celeryproj.py").write_text(textwrap.dedent(CELERY_APP))
    monkeypatch.setenv("TEST_QUEUE", queue)
    monkeypatch.setenv("TEST_BACKEND", BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    client = redis.Redis.from_url(BACKEND)
    try:
        yield tmp_path
    finally:
        for name in [
            m for m in sys.modules if m in {"proj", "celeryproj"} or m.startswith("proj.")
        ]:
            del sys.modules[name]
        client.flushdb()
        client.close()


def _close_client_connections() -> None:
    module = sys.modules.get("proj.caraway")
    if module is None:
        return
    local = module.app._thread_state()
    for connection in (local.transport, local.backend):
        if connection is not None:
            connection.close()


@pytest.fixture
def workers() -> Iterator[list[Any]]:
    started: list[Any] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def seed_tasks() -> ModuleType:
    return importlib.import_module("proj.tasks")


def test_seed_example_runs_on_a_caraway_worker_over_rabbitmq(
    project: Path, workers: list[Any]
) -> None:
    worker = Worker(project, "-c", "2")
    workers.append(worker)
    worker.wait_ready()
    proj = seed_tasks()
    assert proj.add.delay(2, 2).get(timeout=10) == 4
    assert proj.mul.apply_async((3, 4), countdown=1).get(timeout=10) == 12
    failing = proj.boom.delay()
    with pytest.raises(ValueError, match="kaboom"):
        failing.get(timeout=10)
    assert failing.state == states.FAILURE
    results = [proj.xsum.delay(list(range(n))) for n in range(20)]
    assert [r.get(timeout=10) for r in results] == [sum(range(n)) for n in range(20)]
    assert "pyamqp://guest@localhost//" in worker.log()


def test_celery_worker_serves_a_caraway_client(
    project: Path, queue: str, workers: list[Any]
) -> None:
    workers.append(CeleryWorker(project, queue, {}).wait_ready())
    proj = seed_tasks()
    assert proj.add.delay(2, 3).get(timeout=15) == 5
    with pytest.raises(ValueError, match="kaboom"):
        proj.boom.delay().get(timeout=15)


def test_caraway_worker_serves_a_celery_client(project: Path, workers: list[Any]) -> None:
    worker = Worker(project, "-c", "1")
    workers.append(worker)
    worker.wait_ready()
    celery_app = importlib.import_module("celeryproj").app
    try:
        assert celery_app.tasks["proj.tasks.add"].delay(20, 22).get(timeout=15) == 42
        failing = celery_app.send_task("proj.tasks.boom", args=["nope"])
        with pytest.raises(ValueError, match="nope"):
            failing.get(timeout=15)
    finally:
        if "backend" in celery_app.__dict__:
            celery_app.backend.result_consumer.stop()
            celery_app.backend.client.close()
        celery_app.pool.force_close_all()


def test_celery_worker_rpc_results_reach_the_caraway_caller(
    project: Path, queue: str, workers: list[Any]
) -> None:
    workers.append(CeleryWorker(project, queue, {"TEST_CELERY_BACKEND": "rpc://"}).wait_ready())
    proj = seed_tasks()
    oid = proj.app.thread_oid
    backend = RPCBackend(
        "rpc://", options={"broker_url": "pyamqp://guest@localhost//", "reply_to": oid}
    )
    try:
        backend.on_task_call("declare-before-sending")
        ok, bad = proj.add.delay(4, 4), proj.boom.delay()
        done = backend.wait(ok.id, until=lambda doc: b"SUCCESS" in doc, timeout=15)
        assert done is not None and decode_document(done)["result"] == 8
        failed = backend.wait(bad.id, until=lambda doc: b"FAILURE" in doc, timeout=15)
        assert failed is not None
        assert decode_document(failed)["result"]["exc_type"] == "ValueError"
        assert backend.load(ok.id) == done  # a read result stays readable here
    finally:
        backend.close()
        _delete_queue(oid)
