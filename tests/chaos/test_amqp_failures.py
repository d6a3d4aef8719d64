"""RabbitMQ failure paths on real workers: a node killed mid-task, a broker restart under load.

The killed-node test uses a queue of its own on the machine's RabbitMQ; the restart test
restarts a private node (tests/harness/rabbit.py), never the machine's RabbitMQ, which other
tests and other people's runs share. Results go to a SQLite file of the test's own. Worker
logs are printed at teardown (shown with a failure) by the harness's ``processes`` fixture.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.harness.brokers import Broker, open_broker
from tests.harness.fixtures import processes
from tests.harness.processes import Processes
from tests.harness.waiting import wait_for

__all__ = ["processes"]  # a fixture, used by name

pytestmark = [pytest.mark.amqp, pytest.mark.slow]

APP = """
import os
from caraway import Caraway

app = Caraway('proj', broker=os.environ['TEST_BROKER'], backend=os.environ['TEST_BACKEND'],
              include=['proj.tasks'])
app.conf.update(task_default_queue=os.environ['TEST_QUEUE'], result_expires=3600,
                broker_connection_max_retries=None)
"""

TASKS = """
import os
import time
from .caraway import app


@app.task(acks_late=True)
def late_once(marker, seconds):
    # first run records itself and sleeps (the test kills the worker); later runs return
    runs = open(marker).read() if os.path.exists(marker) else ''
    open(marker, 'a').write('x')
    if not runs:
        time.sleep(seconds)
    return len(runs) + 1


@app.task(acks_late=True)
def tick(seconds):
    time.sleep(seconds)
    return seconds
"""


def _write(base: Path) -> Path:
    package = base / "proj"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "caraway.py").write_text(APP)
    (package / "tasks.py").write_text(TASKS)
    return base


def _tasks() -> ModuleType:
    import proj.tasks  # type: ignore[import-not-found]  # written by the fixture

    return proj.tasks


def _forget() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


@pytest.fixture(params=[False, True], ids=["machine", "private"])
def rabbit(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Broker]:
    """A queue on the machine's RabbitMQ, or a private node; `proj` on it, importable here."""
    with open_broker("amqp", tmp_path / "broker", private_rabbit=request.param) as broker:
        for name, value in broker.env().items():
            monkeypatch.setenv(name, value)
        _write(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        _forget()
        try:
            yield broker
        finally:
            _forget()


@pytest.mark.parametrize("rabbit", [False], ids=["machine"], indirect=True)
def test_task_of_a_killed_node_with_acks_late_runs_again_on_another(
    rabbit: Broker, processes: Processes, tmp_path: Path
) -> None:
    processes.workdir = tmp_path
    doomed = processes.caraway_worker("-c", "1", name="doomed").wait_ready()
    marker = tmp_path / "late.marker"
    result = _tasks().late_once.delay(str(marker), 60)
    wait_for(marker.exists, 15, "the task to start")
    doomed.kill()  # parent and child at once: RabbitMQ requeues what the connection held
    heir = processes.caraway_worker("-c", "1", name="heir").wait_ready()
    assert result.get(timeout=20) == 2, heir.log_tail()
    assert marker.read_text() == "xx"  # ran twice: killed once, finished once


@pytest.mark.parametrize("rabbit", [True], ids=["private"], indirect=True)
def test_every_task_finishes_across_a_rabbitmq_restart(
    rabbit: Broker, processes: Processes, tmp_path: Path
) -> None:
    processes.workdir = tmp_path
    worker = processes.caraway_worker("-c", "2").wait_ready()
    tick = _tasks().tick
    results = [tick.delay(0.1) for _ in range(40)]
    wait_for(lambda: sum(r.ready() for r in results) >= 4, 20, "progress")
    assert rabbit.server is not None
    rabbit.server.restart()  # SIGKILL: durable queues and persistent messages come back
    assert [r.get(timeout=60) for r in results] == [0.1] * 40
    assert worker.alive(), worker.log_tail()
    assert "lost" in worker.log() or "unreachable" in worker.log()
