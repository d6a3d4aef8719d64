"""Topic routing on Redis (db 11) between caraway and a real Celery 5.7: both read and write
kombu's binding tables, so a message sent to a topic exchange by either side reaches every
queue whose binding matches, whichever side consumes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import Worker, wait_until
from tests.interop.celeryproc import CeleryWorker, celery_module
from tests.interop.pairs import paired_project

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/11"

#: the same queues in both apps: two bindings on one topic exchange
QUEUES = """
from {package} import Exchange, Queue

app.conf.task_queues = [
    Queue('compat2-sport', Exchange('compat2-feeds', 'topic'), routing_key='sport.*'),
    Queue('compat2-all', Exchange('compat2-feeds', 'topic'), routing_key='#'),
]
"""


@pytest.fixture
def both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from paired_project(
        tmp_path,
        monkeypatch,
        URL,
        caraway_config=QUEUES.format(package="caraway"),
        celery_config=QUEUES.format(package="kombu"),
        celery_tasks=("mark",),
    )


def _runs(key: str) -> tuple[int, int]:
    """(runs in all, runs by Celery) of the mark task for ``key``."""
    raw = redis.Redis.from_url(URL)
    try:
        return int(raw.llen(key + ":runs")), int(raw.llen(key + ":celery"))
    finally:
        raw.close()


def test_a_caraway_topic_message_reaches_a_celery_queue_and_a_caraway_queue(
    both: Path, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(CeleryWorker(both, queues=("compat2-sport",)).wait_ready())
    processes.append(Worker(both, "-Q", "compat2-all", "-c", "1", "-P", "solo").wait_ready())
    import proj.tasks

    key = f"compat2-{uuid.uuid4().hex[:8]}"
    proj.tasks.mark.apply_async((key, "x"), queue="compat2-sport", routing_key="sport.golf")
    wait_until(lambda: _runs(key) == (2, 1), timeout=20, message="a run on each side")
    other = key + "-news"
    proj.tasks.mark.apply_async((other, "y"), queue="compat2-sport", routing_key="news.today")
    wait_until(lambda: _runs(other) == (1, 0), timeout=20, message="the caraway queue only")


def test_a_celery_topic_message_reaches_a_caraway_queue_and_a_celery_queue(
    both: Path, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(Worker(both, "-Q", "compat2-sport", "-c", "1", "-P", "solo").wait_ready())
    processes.append(CeleryWorker(both, queues=("compat2-all",)).wait_ready())
    key = f"compat2-{uuid.uuid4().hex[:8]}"
    with celery_module() as celery_side:
        mark: Any = celery_side.mark
        mark.apply_async((key, "x"), queue="compat2-sport", routing_key="sport.golf")
        wait_until(lambda: _runs(key) == (2, 1), timeout=20, message="a run on each side")
        other = key + "-news"
        mark.apply_async((other, "y"), queue="compat2-sport", routing_key="news.today")
        wait_until(lambda: _runs(other) == (1, 1), timeout=20, message="the Celery queue only")
