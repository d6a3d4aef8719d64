"""Issue 17 on real workers: Broadcast queues give every worker a copy, a task that expires
before its countdown is REVOKED unrun, compressed messages run, and the worker's signals
fire where Celery sends them; on SQLite, Redis (db 10) and RabbitMQ (queues ``compat-*``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway.exceptions import TaskRevokedError
from tests.helpers import Worker, wait_until, write_project

APP = """
import os
from caraway import Broadcast, Caraway, Queue

app = Caraway('proj', broker=os.environ['TEST_BROKER'], backend=os.environ['TEST_BACKEND'],
              include=['proj.tasks'])
prefix = os.environ['TEST_PREFIX']
app.conf.update(
    task_default_queue=prefix,
    task_queues=[Queue(prefix), Broadcast(prefix + '-bcast')],
    task_routes={'proj.tasks.note_everywhere': {'queue': prefix + '-bcast'}},
    worker_hijack_root_logger=True,
)
"""

TASKS = """
import os
from caraway import signals
from .caraway import app

EVIDENCE = os.environ['TEST_EVIDENCE']


def _write(line):
    with open(EVIDENCE, 'a') as handle:
        handle.write(line + '\\n')


@signals.task_received.connect
def on_received(sender=None, request=None, **kwargs):
    _write(f'received {request.task} {request.id}')


@signals.task_prerun.connect(sender=None)
def on_prerun(sender=None, task_id=None, **kwargs):
    _write(f'prerun {sender.name} {task_id}')


@signals.task_revoked.connect
def on_revoked(sender=None, request=None, expired=None, **kwargs):
    _write(f'revoked {request.id} expired={expired}')


@signals.worker_init.connect
def on_worker_init(sender=None, **kwargs):
    _write('worker_init')


@signals.celeryd_after_setup.connect
def on_after_setup(sender=None, **kwargs):
    _write(f'celeryd_after_setup {sender}')


@app.task(bind=True)
def note_everywhere(self, tag):
    _write(f'note {tag} {self.request.hostname}')


@app.task
def add(x, y):
    _write(f'add {x} {y}')
    return x + y
"""


def _amqp_or_skip() -> str:
    pytest.importorskip("amqp")
    return "pyamqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
        yield url, url
    elif request.param == "redis":
        yield "redis://127.0.0.1:6379/10", "redis://127.0.0.1:6379/10"
    else:
        yield _amqp_or_skip(), "redis://127.0.0.1:6379/10"


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: tuple[str, str]
) -> Iterator[tuple[Any, Path]]:
    prefix = f"compat-{uuid.uuid4().hex[:8]}"
    evidence = tmp_path / "evidence.txt"
    evidence.touch()
    env = {
        "TEST_BROKER": broker[0],
        "TEST_BACKEND": broker[1],
        "TEST_PREFIX": prefix,
        "TEST_EVIDENCE": str(evidence),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    write_project(tmp_path, APP, TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import proj.tasks

    try:
        yield proj.tasks, evidence
    finally:
        _cleanup(proj.tasks.app, prefix)
        for name in [m for m in list(__import__("sys").modules) if m.split(".")[0] == "proj"]:
            del __import__("sys").modules[name]


def _cleanup(app: Any, prefix: str) -> None:
    admin = app.admin()
    try:
        for queue in (prefix, f"{prefix}-bcast.bcast.w1@", f"{prefix}-bcast.bcast.w2@"):
            admin.purge(queue)
    except Exception:
        pass
    finally:
        admin.close()
        app.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


@pytest.mark.redis
@pytest.mark.slow
def test_broadcast_reaches_every_worker_and_expired_countdowns_are_revoked(
    project: tuple[Any, Path], workers: list[Worker], tmp_path: Path
) -> None:
    tasks, evidence = project
    for name in ("w1", "w2"):
        workers.append(Worker(tmp_path, "-P", "solo", name=name))
    for worker in workers:
        worker.wait_ready()

    tasks.note_everywhere.delay("hello")
    lines = wait_until(
        lambda: (
            [line for line in evidence.read_text().splitlines() if "note hello" in line]
            if evidence.read_text().count("note hello") >= 2
            else None
        ),
        timeout=20,
        message="both workers to run the broadcast task",
    )
    assert {line.split()[-1].split("@")[0] for line in lines} == {"w1", "w2"}

    # expires before the countdown: REVOKED without running (Celery's rule)
    late = tasks.add.apply_async((40, 2), countdown=2, expires=0.5)
    with pytest.raises(TaskRevokedError):
        late.get(timeout=15)
    assert "add 40 2" not in evidence.read_text()
    wait_until(lambda: f"revoked {late.id} expired=True" in evidence.read_text(), timeout=5)

    # a compressed message runs; signals fired in the worker
    assert tasks.add.apply_async((2, 3), compression="zlib").get(timeout=15) == 5
    assert tasks.add.apply_async((1, 1), compression="bzip2").get(timeout=15) == 2
    text = evidence.read_text()
    assert "worker_init" in text and "celeryd_after_setup w1@" in text
    assert "received proj.tasks.add" in text and "prerun proj.tasks.add" in text


@pytest.fixture(params=["sqlite", "redis"])
def rpc_project(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    broker = (
        f"sqlite:///{tmp_path / 'broker.sqlite3'}"
        if request.param == "sqlite"
        else "redis://127.0.0.1:6379/10"
    )
    prefix = f"compat-{uuid.uuid4().hex[:8]}"
    evidence = tmp_path / "evidence.txt"
    for key, value in {
        "TEST_BROKER": broker,
        "TEST_BACKEND": "rpc",  # Celery's spelling, without ://
        "TEST_PREFIX": prefix,
        "TEST_EVIDENCE": str(evidence),
    }.items():
        monkeypatch.setenv(key, value)
    write_project(tmp_path, APP, TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import proj.tasks

    try:
        yield proj.tasks
    finally:
        _cleanup(proj.tasks.app, prefix)
        for name in [m for m in list(__import__("sys").modules) if m.split(".")[0] == "proj"]:
            del __import__("sys").modules[name]


@pytest.mark.redis
@pytest.mark.slow
def test_rpc_results_travel_over_sqlite_and_redis_brokers(
    rpc_project: Any, workers: list[Worker], tmp_path: Path
) -> None:
    workers.append(Worker(tmp_path, "-P", "solo").wait_ready())
    assert rpc_project.app.result_backend_url == "rpc://"
    results = [rpc_project.add.delay(n, n) for n in range(3)]
    assert [result.get(timeout=15) for result in results] == [0, 2, 4]
    seen: list[str] = []
    assert (
        rpc_project.add.delay(5, 5).get(timeout=15, on_message=lambda m: seen.append(m["status"]))
        == 10
    )
    assert seen[-1] == "SUCCESS"
