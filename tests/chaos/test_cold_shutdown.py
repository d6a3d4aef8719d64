"""A cold shutdown (a second SIGTERM, or SIGQUIT) of a prefork worker with acks_late tasks
running: the running tasks die with their children, and nothing is lost: every one of them
is run again by the next worker, and finishes exactly once.
"""

from __future__ import annotations

import signal
import sys
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
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = write_projects(tmp_path / "work")
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    env = {
        "TEST_BROKER": url, "TEST_BACKEND": url, "TEST_QUEUE": "cold",
        "TEST_LEDGER": str(tmp_path / "ledger.txt"), "TEST_ACKS_LATE": "1",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(base))
    yield base
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


@pytest.mark.parametrize("how", ["second-sigterm", "sigquit"])
def test_cold_shutdown_loses_no_acks_late_task(
    how: str, project: Path, processes: Processes, tmp_path: Path
) -> None:
    import proj.tasks  # type: ignore[import-not-found]  # written by the fixture

    processes.workdir = project
    worker = processes.caraway_worker("-c", "2", name="cold").wait_ready()
    ledger = Ledger(tmp_path / "ledger.txt")
    for number in range(4):
        proj.tasks.ledger.delay(number, 2.0)
    wait_for(lambda: len(ledger.events()) >= 2, 15, "two tasks to start")
    if how == "sigquit":
        worker.send(signal.SIGQUIT)
    else:
        worker.send(signal.SIGTERM)
        wait_for(lambda: "warm shutdown" in worker.log(), 5, "the warm shutdown to begin")
        worker.send(signal.SIGTERM)
    assert worker.popen is not None
    worker.popen.wait(timeout=10)  # cold: does not wait the 2 s the tasks take
    interrupted = {number for kind, number, _, _ in ledger.events() if kind == "S"}
    assert interrupted and not ledger.done(), ledger.events()
    processes.caraway_worker("-c", "2", name="heir").wait_ready()
    wait_for(lambda: ledger.done() == set(range(4)), 30, "every task to finish")
    figures = ledger.classify(Send(acknowledged=list(range(4))))
    assert figures["finished_twice"] == {} and figures["never"] == [], figures
    assert set(figures["more_detail"]) == interrupted, figures  # only those ran twice
