"""``enable_utc=False`` between caraway and a real Celery 5.7 on Redis (db 11), every process
in a zone that is not UTC (Asia/Kolkata, +05:30): a countdown sent by either side runs when
due on the other, not hours early or late."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Worker
from tests.interop.celeryproc import CeleryWorker, celery_module
from tests.interop.pairs import paired_project

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/11"
ZONE = {"TZ": "Asia/Kolkata"}
LOCAL_TIME = "\napp.conf.enable_utc = False\n"


@pytest.fixture
def local_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    project = paired_project(
        tmp_path, monkeypatch, URL, caraway_config=LOCAL_TIME, celery_config=LOCAL_TIME, env=ZONE
    )
    path = next(project)
    time.tzset()  # this process reads the zone paired_project set, as the workers do
    try:
        yield path
    finally:
        project.close()
        monkeypatch.undo()
        time.tzset()


def _ran_after(result: Any, sent: datetime, seconds: float) -> float:
    done = result.date_done
    if isinstance(done, str):
        done = datetime.fromisoformat(done)
    waited = (done - sent).total_seconds()
    assert seconds - 0.5 <= waited < seconds + 15, waited
    return waited


def test_a_caraway_countdown_runs_when_due_on_a_celery_worker(
    local_time: Path, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(CeleryWorker(local_time, queues=("celery",)).wait_ready())
    import proj.tasks

    sent = datetime.now(timezone.utc)
    result = proj.tasks.add.apply_async((2, 3), countdown=3)
    assert result.get(timeout=25) == 5
    _ran_after(result, sent, 3)


def test_a_celery_countdown_runs_when_due_on_a_caraway_worker(
    local_time: Path, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(Worker(local_time, "-c", "1", "-P", "solo").wait_ready())
    with celery_module() as celery_side:
        sent = datetime.now(timezone.utc)
        result = celery_side.add.apply_async((4, 4), countdown=3)
        assert result.get(timeout=25) == 8
        _ran_after(result, sent, 3)
