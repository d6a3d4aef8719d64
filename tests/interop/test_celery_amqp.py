"""Celery 5.7 and caraway on one RabbitMQ: the seed's example, and each serving the other.

The caraway app is the seed's ``proj`` as tests/integration/test_amqp_worker.py writes it
(broker ``pyamqp://guest@localhost//`` exactly) plus a task that fails; the Celery app
(tests/interop/celeryproc.py) uses the same URL. Both use a queue private to the test
(``TEST_QUEUE``, deleted afterwards) and results in Redis db 14 (flushed afterwards).
Workers are real processes, always stopped.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from caraway import states
from caraway.brokers.amqp.backend import RPCBackend
from caraway.protocol.results import decode_document
from tests.helpers import Worker
from tests.integration.test_amqp_worker import (
    SEED_BROKER,
    delete_queue,
    rabbit_available,
    write_seed_project,
)
from tests.interop.celeryproc import CeleryWorker, celery_module, write_celery_app

pytestmark = [pytest.mark.amqp, pytest.mark.redis, pytest.mark.slow]

BACKEND = "redis://localhost/14"

# appended to the seed's proj/tasks.py: the tests see a failure travel both ways
BOOM = """

@app.task
def boom(message='kaboom'):
    raise ValueError(message)
"""


@pytest.fixture
def queue() -> Iterator[str]:
    rabbit_available()
    name = f"seed-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        delete_queue(name)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queue: str) -> Iterator[Path]:
    write_seed_project(tmp_path, backend=BACKEND)
    with open(tmp_path / "proj" / "tasks.py", "a") as seed_tasks:
        seed_tasks.write(BOOM)
    write_celery_app(tmp_path, tasks=("add", "boom"))
    monkeypatch.setenv("TEST_QUEUE", queue)
    monkeypatch.setenv("TEST_BROKER", SEED_BROKER)
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


def seed_tasks() -> ModuleType:
    return importlib.import_module("proj.tasks")


def test_seed_example_runs_on_a_caraway_worker_over_rabbitmq(
    project: Path, processes: list[Worker | CeleryWorker]
) -> None:
    worker = Worker(project, "-c", "2")
    processes.append(worker)
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
    project: Path, queue: str, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(
        CeleryWorker(project, hostname=f"celery-{queue}@%h", queues=(queue,)).wait_ready()
    )
    proj = seed_tasks()
    assert proj.add.delay(2, 3).get(timeout=15) == 5
    with pytest.raises(ValueError, match="kaboom"):
        proj.boom.delay().get(timeout=15)


def test_caraway_worker_serves_a_celery_client(
    project: Path, processes: list[Worker | CeleryWorker]
) -> None:
    worker = Worker(project, "-c", "1")
    processes.append(worker)
    worker.wait_ready()
    with celery_module() as celery:
        assert celery.add.delay(20, 22).get(timeout=15) == 42
        failing = celery.app.send_task("proj.tasks.boom", args=["nope"])
        with pytest.raises(ValueError, match="nope"):
            failing.get(timeout=15)


def test_celery_worker_rpc_results_reach_the_caraway_caller(
    project: Path, queue: str, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(
        CeleryWorker(
            project,
            hostname=f"celery-{queue}@%h",
            queues=(queue,),
            env={"TEST_CELERY_BACKEND": "rpc://"},
        ).wait_ready()
    )
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
        delete_queue(oid)
