"""A real ``celery worker`` and a real caraway worker on one Redis, each serving the other's client.

Needs ``celery==5.7.0`` and ``packaging`` (test extra). Redis db 11 is ours alone, flushed
before and after each test. The Celery app module (tests/interop/celeryproc.py) is written
beside `proj`; both declare the same task names, so either worker runs either client's
messages.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from caraway import states
from tests.helpers import Worker, wait_until
from tests.integration.redisproj import tasks
from tests.interop.celeryproc import CeleryWorker

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    # Celery 5.7's backend calls redis-py methods that redis-py 8 marks deprecated (setex)
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/11"


CELERY_TASKS = ("add", "boom", "mark")  # the conftest's db/project/celery_client read these and URL


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
    processes.append(CeleryWorker(project, queues=("celery", "lopri")).wait_ready())
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
    processes.append(CeleryWorker(project, queues=("celery",)).wait_ready())
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
