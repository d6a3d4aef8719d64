"""Periodic tasks across the two implementations, on one Redis: runs sent by caraway's
beat execute on a Celery 5 worker, and runs sent by Celery's beat on a caraway worker.

Needs ``celery==5.7.0``. Redis db 9 is this module's own, flushed before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from caraway.beat import Beat
from tests.helpers import Worker, wait_until
from tests.integration.redisproj import tasks
from tests.interop.celeryproc import CeleryWorker, stop_process

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/9"
CELERY_TASKS = ("mark",)  # the conftest's db/project fixtures read these and URL

CELERY_BEAT = """
from celeryproj import app

app.conf.beat_schedule = {
    'mark-every-second': {
        'task': 'proj.tasks.mark',
        'schedule': 1.0,
        'args': ('celery-beat', 'run'),
    },
}
"""


def _run_beat(app: Any, started: list[threading.Thread], beats: list[Beat]) -> Beat:
    beat = Beat(app, node="caraway-beat@test", lease_seconds=2)
    beat.open()
    thread = threading.Thread(target=beat.run, daemon=True)
    thread.start()
    started.append(thread)
    beats.append(beat)
    return beat


def test_caraway_beat_runs_execute_on_a_celery_worker(
    project: Path, db: redis.Redis, processes: list[Any]
) -> None:
    processes.append(CeleryWorker(project, queues=("celery",)).wait_ready())
    app = tasks().app
    key = f"caraway-beat-{uuid.uuid4().hex[:6]}"
    app.conf.update(
        beat_schedule_filename=f"interop-{uuid.uuid4().hex[:6]}",
        beat_schedule={"mark": {"task": "proj.tasks.mark", "schedule": 0.5, "args": (key, "r")}},
    )
    threads: list[threading.Thread] = []
    beats: list[Beat] = []
    try:
        _run_beat(app, threads, beats)
        wait_until(lambda: db.llen(f"{key}:celery") >= 3, timeout=20, message="celery runs")
    finally:
        for beat in beats:
            beat.stop()
        for thread in threads:
            thread.join(10)
    assert "Task proj.tasks.mark[" in processes[0].log()


def test_celery_beat_runs_execute_on_a_caraway_worker(
    project: Path, db: redis.Redis, processes: list[Any]
) -> None:
    (project / "celerybeatproj.py").write_text(CELERY_BEAT)
    sys.modules.pop("celerybeatproj", None)
    processes.append(Worker(project, "-c", "1").wait_ready())
    log = open(project / "celery-beat.log", "wb")  # noqa: SIM115 - closed below
    beat = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "celerybeatproj", "beat", "-l", "info",
            "-s", str(project / "celerybeat-schedule"), "--max-interval", "1",
        ],
        cwd=project, env={**os.environ, "PYTHONPATH": str(project)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: db.llen("celery-beat:runs") >= 3, timeout=30, message="caraway runs")
    finally:
        stop_process(beat)
        log.close()
    assert db.llen("celery-beat:celery") == 0, "the runs ran on the caraway worker"
    assert "Sending due task mark-every-second" in (project / "celery-beat.log").read_text()
