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

from tests.helpers import Worker, write_project
from tests.integration.redisproj import REDIS_APP, REDIS_TASKS, clean_db, forget_proj
from tests.interop.celeryproc import CeleryWorker, celery_module, require_celery, write_celery_app

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
    require_celery()
    write_project(tmp_path, app_source=REDIS_APP + LOCAL_TIME, tasks_source=REDIS_TASKS)
    write_celery_app(tmp_path, tasks=("add",))
    celery_app = tmp_path / "celeryproj.py"
    celery_app.write_text(celery_app.read_text() + LOCAL_TIME)
    for name, value in {"TEST_BROKER": URL, "TEST_BACKEND": URL, **ZONE}.items():
        monkeypatch.setenv(name, value)
    time.tzset()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_proj()
    db = clean_db(URL)
    client = next(db)
    try:
        yield tmp_path
    finally:
        forget_proj()
        client.close()
        db.close()
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
