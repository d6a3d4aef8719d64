"""``rpc://`` results over Redis (db 11) between caraway and a real Celery 5.7, both ways:
the result travels as a message to the caller's reply list (kombu's layout), so each side's
client reads what the other side's worker sent back."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture
def rpc_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from paired_project(
        tmp_path, monkeypatch, URL, celery_tasks=("add", "boom"), env={"TEST_BACKEND": "rpc://"}
    )


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
