"""A prefork worker whose parent is SIGKILLed: its children must not go on alone (nobody
renews their claims, enforces their time limits or reads their reports), so they finish the
task in hand, settle it, and exit. Found by the delivery ledger (tests/chaos/ledger.py).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.ledger import Ledger, Send, write_projects
from tests.harness.fixtures import processes
from tests.harness.processes import Processes
from tests.harness.waiting import wait_for

__all__ = ["processes"]  # a fixture, used by name

pytestmark = [pytest.mark.slow]


@pytest.fixture
def ledger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = write_projects(tmp_path / "work")
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    env = {
        "TEST_BROKER": url, "TEST_BACKEND": url, "TEST_QUEUE": "orphans",
        "TEST_LEDGER": str(tmp_path / "ledger.txt"), "TEST_ACKS_LATE": "1",
        "TEST_TRANSPORT_OPTIONS": '{"visibility_timeout": 2}',
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(base))
    yield base
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_children_of_a_killed_parent_finish_their_task_once_and_exit(
    ledger_env: Path, processes: Processes, tmp_path: Path
) -> None:
    import proj.tasks  # type: ignore[import-not-found]  # written by the fixture

    processes.workdir = ledger_env
    worker = processes.caraway_worker("-c", "2", name="parent").wait_ready()
    children = worker.children()
    assert len(children) == 2
    ledger = Ledger(tmp_path / "ledger.txt")
    proj.tasks.ledger.delay(0, 1.5)
    wait_for(ledger.events, 15, "the task to start")
    worker.send(signal.SIGKILL)
    assert worker.popen is not None
    worker.popen.wait(timeout=10)
    wait_for(lambda: not any(_alive(pid) for pid in children), 8, "the orphaned children to exit")
    # the task in hand finished and was acked: a new node does not run it again, even
    # after the visibility timeout (2 s) has long passed
    processes.caraway_worker("-c", "1", name="heir").wait_ready()
    proj.tasks.ledger.delay(1, 0)
    wait_for(lambda: 1 in ledger.done(), 15, "the heir to run a new task")
    time.sleep(3)  # a sweep past the visibility timeout: a rerun would show now
    figures = ledger.classify(Send(acknowledged=[0, 1]))
    assert figures["once"] == 2, figures
