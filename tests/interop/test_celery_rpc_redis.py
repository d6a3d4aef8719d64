"""``rpc://`` results over Redis (db 11) between caraway and a real Celery 5.7, both ways:
the result travels as a message to the caller's reply list (kombu's layout), so each side's
client reads what the other side's worker sent back."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture
def rpc_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    require_celery()
    write_project(tmp_path, app_source=REDIS_APP, tasks_source=REDIS_TASKS)
    write_celery_app(tmp_path, tasks=("add", "boom"))
    monkeypatch.setenv("TEST_BROKER", URL)
    monkeypatch.setenv("TEST_BACKEND", "rpc://")
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


def test_a_celery_rpc_client_reads_what_a_caraway_worker_sent(
    rpc_project: Path, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(Worker(rpc_project, "-c", "1", "-P", "solo").wait_ready())
    with celery_module() as celery_side:
        assert celery_side.add.delay(20, 22).get(timeout=20) == 42
        failed = celery_side.boom.delay("rpc")
        with pytest.raises(Exception, match="rpc") as caught:
            failed.get(timeout=20)
        assert type(caught.value).__name__ == "ValueError"
        assert failed.state == "FAILURE"


def test_a_caraway_rpc_client_reads_what_a_celery_worker_sent(
    rpc_project: Path, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(CeleryWorker(rpc_project, queues=("celery",)).wait_ready())
    import proj.tasks

    tasks: Any = proj.tasks
    results = [tasks.add.delay(i, i) for i in range(3)]
    assert [result.get(timeout=20) for result in results] == [0, 2, 4]
    failed = tasks.boom.delay("from celery")
    with pytest.raises(ValueError, match="from celery"):
        failed.get(timeout=20)
