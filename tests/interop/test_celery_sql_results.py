"""Celery's database result backend and caraway's SQL store on one database, both ways.

In-process: a Celery 5.7 app writes results (values, failures, extended fields, saved
groups) and caraway reads them, and the reverse, on PostgreSQL, SQLite and MariaDB. With
workers: a real ``celery worker`` and a real caraway worker on Redis (db 7, ours) keep
results in PostgreSQL, each read by the other side's client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway, states
from caraway.protocol.results import encode_document, result_document
from caraway.result import AsyncResult, GroupResult
from tests import mysqldb, pg
from tests.helpers import Worker
from tests.integration.redisproj import clean_db, redis_project, tasks
from tests.interop.celeryproc import (
    CeleryWorker,
    celery_module,
    require_celery,
    write_celery_app,
)

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]

URL = "redis://127.0.0.1:6379/7"
CELERY_TASKS = ("add", "boom")


@pytest.fixture(scope="module")
def pg_db() -> Iterator[str]:
    with pg.database("caraway_ha_interop") as name:
        yield name


@pytest.fixture(params=["postgresql", "sqlite", "mysql"])
def results_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "mysql":
        with mysqldb.database() as url:
            yield url
        return
    if request.param == "sqlite":
        yield f"db+sqlite:///{tmp_path / 'results.db'}"
        return
    dbname = request.getfixturevalue("pg_db")
    with pg.schema(dbname) as schema:
        yield pg.url(dbname, scheme="db+postgresql", schema=schema)


@pytest.fixture
def celery_app(results_url: str) -> Iterator[Any]:
    celery = require_celery()
    app = celery.Celery("interop", broker="memory://", backend=results_url)
    app.conf.update(result_extended=True, result_serializer="json")
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def caraway_app(results_url: str) -> Iterator[Caraway]:
    app = Caraway("interop", broker="memory://", backend=results_url)
    try:
        yield app
    finally:
        app.close()


def test_results_celery_writes_read_on_caraway(celery_app: Any, caraway_app: Caraway) -> None:
    done, failed = str(uuid.uuid4()), str(uuid.uuid4())
    celery_app.backend.store_result(done, {"sum": [1, 2]}, states.SUCCESS)
    try:
        raise ValueError("from celery")
    except ValueError as exc:
        celery_app.backend.store_result(failed, exc, states.FAILURE, traceback="Traceback: x")

    ok = AsyncResult(done, app=caraway_app)
    assert ok.get(timeout=5) == {"sum": [1, 2]}
    assert ok.state == states.SUCCESS and ok.date_done is not None
    bad = AsyncResult(failed, app=caraway_app)
    with pytest.raises(ValueError, match="from celery"):
        bad.get(timeout=5)
    assert bad.traceback == "Traceback: x"


def test_results_caraway_writes_read_on_celery(celery_app: Any, caraway_app: Caraway) -> None:
    backend = caraway_app.backend
    assert backend is not None
    done, failed, started = (str(uuid.uuid4()) for _ in range(3))
    extended = {"name": "proj.add", "args": [2, 2], "kwargs": {}, "worker": "w1@h",
                "retries": 0, "queue": "celery"}  # fmt: skip
    for task_id, state, value in (
        (done, states.SUCCESS, 4),
        (failed, states.FAILURE, KeyError("missing")),
        (started, states.STARTED, {"pid": 1, "hostname": "w1@h"}),
    ):
        doc = result_document(task_id, state, value, traceback="tb", extended=extended)
        backend.store(task_id, encode_document(doc), state=state, expires=60)

    ok = celery_app.AsyncResult(done)
    assert ok.get(timeout=5) == 4
    assert ok.name == "proj.add" and ok.args == [2, 2] and ok.queue == "celery"
    with pytest.raises(KeyError, match="missing"):
        celery_app.AsyncResult(failed).get(timeout=5, propagate=True)
    assert celery_app.AsyncResult(started).state == states.STARTED
    assert celery_app.AsyncResult(started).info == {"pid": 1, "hostname": "w1@h"}


def test_a_final_result_celery_wrote_is_not_overwritten_by_caraway(
    celery_app: Any, caraway_app: Caraway
) -> None:
    task_id = str(uuid.uuid4())
    celery_app.backend.store_result(task_id, 1, states.SUCCESS)
    late = result_document(task_id, states.STARTED, None)
    backend = caraway_app.backend
    assert backend is not None

    assert backend.store(task_id, encode_document(late), state=states.STARTED, expires=60) is False
    assert celery_app.AsyncResult(task_id).get(timeout=5) == 1


def test_groups_saved_on_one_side_restore_on_the_other(
    celery_app: Any, caraway_app: Caraway
) -> None:
    celery = require_celery()
    ids = [str(uuid.uuid4()) for _ in range(2)]
    celery_group = celery.result.GroupResult(
        str(uuid.uuid4()), [celery_app.AsyncResult(i) for i in ids], app=celery_app
    )
    celery_group.save()
    restored = GroupResult.restore(celery_group.id, app=caraway_app)
    assert restored is not None and [child.id for child in restored.results] == ids

    ours = GroupResult(str(uuid.uuid4()), [AsyncResult(i, app=caraway_app) for i in ids],
                       app=caraway_app)  # fmt: skip
    ours.save()
    theirs = celery.result.GroupResult.restore(ours.id, app=celery_app)
    assert theirs is not None and [child.id for child in theirs.results] == ids


# -- workers -----------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_db: str) -> Iterator[Path]:
    require_celery()
    for _db in clean_db(URL):
        with pg.schema(pg_db) as schema:
            results = pg.url(pg_db, scheme="db+postgresql", schema=schema)
            write_celery_app(tmp_path, tasks=CELERY_TASKS)
            yield from redis_project(tmp_path, monkeypatch, URL, TEST_BACKEND=results)


@pytest.fixture
def processes() -> Iterator[list[Worker | CeleryWorker]]:
    started: list[Worker | CeleryWorker] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


@pytest.mark.slow
def test_a_celery_worker_and_a_caraway_worker_share_a_postgresql_result_store(
    project: Path, processes: list[Worker | CeleryWorker]
) -> None:
    processes.append(CeleryWorker(project, queues=("celery",)).wait_ready())
    proj = tasks()
    assert proj.add.delay(2, 2).get(timeout=15) == 4
    with pytest.raises(ValueError, match="from caraway"):
        proj.boom.delay("from caraway").get(timeout=15)
    processes.pop().stop()

    processes.append(Worker(project, "-c", "1", "-Q", "celery").wait_ready())
    with celery_module() as celery_client:
        assert celery_client.add.delay(3, 4).get(timeout=15) == 7
        failing = celery_client.boom.delay("from celery")
        with pytest.raises(ValueError, match="from celery"):
            failing.get(timeout=15)
        assert "ValueError" in (celery_client.app.AsyncResult(failing.id).traceback or "")
