"""Chains and chords across Celery 5.7 and caraway on one Redis: either client, either worker.

Redis db 8 is ours alone, flushed before and after each test. The Celery app module
(tests/interop/celeryproc.py) is written beside `proj` and declares the same task names.
The one thing to know: the workflow's later steps travel inside the first messages
(``embed.chain``/``embed.chord``) and the chord join is counted in Redis, so the worker
that runs them must read the other side's wire form and counter layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Worker
from tests.integration.redisproj import tasks
from tests.interop.celeryproc import CeleryWorker

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    # Celery 5.7's backend calls redis-py methods that redis-py 8 marks deprecated (setex)
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/8"


CELERY_TASKS = ("add", "mul", "xsum")  # the conftest's db/project/celery_client read these and URL


def test_a_celery_chain_and_chord_complete_on_a_caraway_worker_and_caraway_reads_them(
    project: Path, celery_client: Any, processes: list[Worker | CeleryWorker]
) -> None:
    from celery import chain, chord  # type: ignore[import-untyped]  # Celery ships no types

    processes.append(Worker(project, "-c", "2").wait_ready())
    add, mul, xsum = celery_client.add, celery_client.mul, celery_client.xsum
    chained = chain(add.s(4, 4), mul.s(8), add.s(1))()
    assert chained.get(timeout=20) == 65
    joined = chord((add.s(i, i) for i in range(10)), xsum.s())()
    assert joined.get(timeout=20) == 90
    proj = tasks()
    assert proj.add.app.AsyncResult(chained.id).get(timeout=5) == 65
    assert proj.add.app.AsyncResult(chained.parent.id).get(timeout=5) == 64
    assert proj.add.app.AsyncResult(joined.id).get(timeout=5) == 90
    log = processes[0].log()
    assert f"proj.tasks.xsum[{joined.id}]" in log, "the caraway worker ran the chord body"


def test_a_caraway_chain_and_chord_complete_on_a_celery_worker_and_celery_reads_them(
    project: Path, celery_client: Any, processes: list[Worker | CeleryWorker]
) -> None:
    from caraway.canvas import chain, chord

    worker = CeleryWorker(project, queues=("celery",)).wait_ready()
    processes.append(worker)
    proj = tasks()
    chained = chain(proj.add.s(4, 4), proj.mul.s(8), proj.add.s(1))()
    assert chained.get(timeout=20) == 65
    joined = chord((proj.add.s(i, i) for i in range(10)), proj.xsum.s())()
    assert joined.get(timeout=20) == 90
    app = celery_client.app
    assert app.AsyncResult(chained.id).get(timeout=5) == 65
    assert app.AsyncResult(joined.id).get(timeout=5) == 90
    assert f"proj.tasks.xsum[{joined.id}]" in worker.log(), "the Celery worker ran the body"


def test_one_chord_is_joined_by_a_celery_worker_and_a_caraway_worker_together(
    project: Path, celery_client: Any, processes: list[Worker | CeleryWorker]
) -> None:
    from caraway.canvas import chord

    processes.append(CeleryWorker(project, queues=("celery",)).wait_ready())
    processes.append(Worker(project, "-c", "1").wait_ready())
    proj = tasks()
    joined = chord((proj.add.s(i, i) for i in range(40)), proj.xsum.s())()
    assert joined.get(timeout=30) == sum(2 * i for i in range(40))
    # one "succeeded" line per header task the caraway worker ran ("received" is logged too)
    ran_on_caraway = sum(
        1
        for line in processes[1].log().splitlines()
        if "Task proj.tasks.add[" in line and "succeeded" in line
    )
    assert 0 < ran_on_caraway < 40, "both workers ran header tasks"
