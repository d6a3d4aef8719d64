"""Single hostile messages that took a real worker down before the decode boundary
(issue 15, findings 1 and 2), each against the pool it killed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway.protocol.message import Message, TaskMessage, encode
from tests.harness.fixtures import processes
from tests.harness.processes import Processes
from tests.harness.waiting import wait_for
from tests.helpers import write_project

__all__ = ["processes"]  # a fixture, used by name


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    write_project(tmp_path)
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    monkeypatch.setenv("TEST_BROKER", url)
    monkeypatch.setenv("TEST_BACKEND", url)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]
    yield tmp_path
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def _publish(message: Message) -> None:
    from proj.caraway import app

    transport = app.connection()
    try:
        transport.publish(message, queue="celery")
    finally:
        transport.close()


def _dead_letters() -> list[str]:
    from proj.caraway import app

    admin = app.admin()
    try:
        return [letter.reason for letter in admin.dead_letters()]
    finally:
        admin.close()


def _hostile(task_id: str, **headers: Any) -> Message:
    # a task that runs for a while: the supervisor looks at a running task's time limit
    message = encode(TaskMessage(id=task_id, task="proj.tasks.slow", args=[2]))
    message.headers.update(headers)
    return message


@pytest.mark.parametrize(
    ("pool", "headers", "why"),
    [
        # the supervisor's time-limit check raised TypeError: it died, orphaning its children
        ("prefork", {"timelimit": ["10", None]}, "timelimit"),
        # the consumer thread died and the worker exited with status 0
        ("threads", {"argsrepr": {"__type__": "bytes", "__value__": 5}}, "bytes"),
        ("solo", {"retries": "many"}, "retries"),
    ],
)
def test_one_hostile_message_is_dead_lettered_and_the_worker_goes_on(
    project: Path, processes: Processes, pool: str, headers: dict[str, Any], why: str
) -> None:
    worker = processes.caraway_worker("-P", pool, "-c", "1").wait_ready()
    children = sorted(worker.children())
    _publish(_hostile("hostile-1", **headers))
    from proj.tasks import add

    assert add.delay(2, 2).get(timeout=15) == 4
    reasons = wait_for(_dead_letters, 10, "the hostile message in the dead-letter store")
    assert len(reasons) == 1 and why in reasons[0]
    assert worker.alive()
    assert sorted(worker.children()) == children
