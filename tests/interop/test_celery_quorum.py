"""Quorum queues with real workers: a Celery 5.7 worker runs caraway's countdowns and a
caraway worker runs Celery's, each delayed in RabbitMQ by Celery's native delayed delivery.

Both apps use ``task_default_queue_type='quorum'`` and a topic exchange (what Celery needs
for native delayed delivery), a queue ``caraway-ha-<uuid>`` of their own (deleted after),
and results in Redis db 7 (ours, flushed around each test).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import _rabbit_or_skip, delete_amqp_queues
from tests.helpers import Worker, wait_until, write_project
from tests.integration.redisproj import clean_db, forget_proj
from tests.interop.celeryproc import CeleryWorker, celery_module, require_celery

pytestmark = [
    pytest.mark.amqp,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

RESULTS = "redis://127.0.0.1:6379/7"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"

SETTINGS = """
app.conf.update(
    task_default_queue={queue!r},
    task_default_queue_type='quorum',
    task_default_exchange_type='topic',
    result_expires=3600,
)
"""
CARAWAY_APP = (
    "from caraway import Caraway\n"
    f"app = Caraway('proj', broker={BROKER!r}, backend={RESULTS!r}, include=['proj.tasks'])\n"
)
CELERY_APP = (
    "from celery import Celery\n"
    f"app = Celery('proj', broker={BROKER!r}, backend={RESULTS!r})\n"
    "app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)\n"
    "\n@app.task(name='proj.tasks.add')\ndef add(x, y):\n    return x + y\n"
)
TASKS = "from .caraway import app\n\n\n@app.task\ndef add(x, y):\n    return x + y\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    require_celery()
    _rabbit_or_skip()
    queue = f"caraway-ha-{uuid.uuid4().hex[:12]}"
    settings = SETTINGS.format(queue=queue)
    write_project(tmp_path, app_source=CARAWAY_APP + settings, tasks_source=TASKS)
    (tmp_path / "celeryproj.py").write_text(CELERY_APP + settings)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_proj()
    for _db in clean_db(RESULTS):
        try:
            yield tmp_path
        finally:
            forget_proj()
            delete_amqp_queues([queue])


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    started: list[Any] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def test_a_celery_worker_runs_caraways_countdown_when_it_falls_due(
    project: Path, processes: list[Any]
) -> None:
    worker = CeleryWorker(project).wait_ready()
    processes.append(worker)
    from proj.tasks import add

    sent = time.monotonic()
    result = add.apply_async((2, 2), countdown=3)
    time.sleep(1.0)
    # not handed to the Celery worker to hold: it waits in the celery_delayed_* queues
    assert result.id not in worker.log()
    assert result.get(timeout=20) == 4
    assert time.monotonic() - sent >= 2.9


def test_a_caraway_worker_runs_celerys_countdown_when_it_falls_due(
    project: Path, processes: list[Any]
) -> None:
    processes.append(Worker(project, "-c", "1").wait_ready())
    with celery_module() as client:
        sent = time.monotonic()
        result = client.app.send_task("proj.tasks.add", (3, 4), countdown=2)
        assert result.get(timeout=20) == 7
    assert time.monotonic() - sent >= 1.9
    wait_until(lambda: result.id in processes[0].log(), timeout=5, message="the task's log line")
