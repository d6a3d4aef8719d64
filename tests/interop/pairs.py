"""A caraway `proj` and a Celery ``celeryproj`` written side by side on one Redis db, for the
interop tests that configure both apps alike (signing, routing, rpc, enable_utc)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.helpers import write_project
from tests.integration.redisproj import REDIS_APP, REDIS_TASKS, clean_db, forget_proj
from tests.interop.celeryproc import require_celery, write_celery_app


def paired_project(
    base: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    *,
    caraway_config: str = "",
    celery_config: str = "",
    celery_tasks: Sequence[str] = ("add",),
    env: Mapping[str, str] | None = None,
) -> Iterator[Path]:
    """Write both apps (each with its ``*_config`` source appended), point this process and
    the workers it starts at ``url`` (flushed before and after) with ``env`` set."""
    require_celery()
    write_project(base, app_source=REDIS_APP + caraway_config, tasks_source=REDIS_TASKS)
    write_celery_app(base, tasks=celery_tasks)
    celery_app = base / "celeryproj.py"
    celery_app.write_text(celery_app.read_text() + celery_config)
    for name, value in {"TEST_BROKER": url, "TEST_BACKEND": url, **(env or {})}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(base)
    monkeypatch.syspath_prepend(str(base))
    forget_proj()
    db = clean_db(url)
    next(db)
    try:
        yield base
    finally:
        forget_proj()
        db.close()  # flushes the db again
