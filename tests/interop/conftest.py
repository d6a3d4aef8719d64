"""Fixtures the Celery interop tests share; the Celery app and worker are in celeryproc.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Worker
from tests.interop.celeryproc import CeleryWorker


@pytest.fixture
def processes() -> Iterator[list[Worker | CeleryWorker]]:
    """Workers a test starts, caraway's or Celery's; every one is stopped afterwards."""
    started: list[Worker | CeleryWorker] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()
