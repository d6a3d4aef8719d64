"""Fixtures the Celery interop tests share; the Celery app and worker are in celeryproc.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import Worker
from tests.integration.redisproj import clean_db, redis_project
from tests.interop.celeryproc import CeleryWorker, celery_module, require_celery, write_celery_app


@pytest.fixture
def processes() -> Iterator[list[Worker | CeleryWorker]]:
    """Workers a test starts, caraway's or Celery's; every one is stopped afterwards."""
    started: list[Worker | CeleryWorker] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


# A Redis project with a Celery app beside it, for the modules that set ``URL`` (their private
# Redis db) and ``CELERY_TASKS`` (the seed tasks the Celery app declares).
@pytest.fixture
def db(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    require_celery()
    yield from clean_db(request.module.URL)


@pytest.fixture
def project(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    db: redis.Redis,
) -> Iterator[Path]:
    write_celery_app(tmp_path, tasks=request.module.CELERY_TASKS)
    yield from redis_project(tmp_path, monkeypatch, request.module.URL)


@pytest.fixture
def celery_client(project: Path) -> Iterator[Any]:
    """The Celery app module ``celeryproj`` as a client in this process."""
    with celery_module() as module:
        yield module
