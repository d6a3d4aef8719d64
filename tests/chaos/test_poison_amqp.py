"""A poison message on a RabbitMQ classic queue (a task that kills its process every time):
a classic queue counts no deliveries, so the worker must count the deaths itself, and the
message must end in the dead-letter store after ``worker_delivery_cap`` deliveries while the
queue keeps flowing. Found by the delivery ledger (it looped for as long as the run lasted).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.ledger import Ledger, write_projects
from tests.harness.brokers import open_broker
from tests.harness.fixtures import processes
from tests.harness.processes import Processes
from tests.harness.waiting import wait_for

__all__ = ["processes"]  # a fixture, used by name

pytestmark = [pytest.mark.amqp, pytest.mark.slow]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = write_projects(tmp_path / "work")
    with open_broker("amqp", tmp_path / "broker") as broker:
        for name, value in broker.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TEST_LEDGER", str(tmp_path / "ledger.txt"))
        monkeypatch.setenv("TEST_ACKS_LATE", "1")
        monkeypatch.syspath_prepend(str(base))
        try:
            yield base
        finally:
            for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
                del sys.modules[name]


def test_poison_on_a_classic_queue_is_dead_lettered_after_the_cap(
    project: Path, processes: Processes, tmp_path: Path
) -> None:
    tasks = importlib.import_module("proj.tasks")
    processes.workdir = project
    processes.caraway_worker("-c", "1", name="poisoned").wait_ready()
    poison = tasks.ledger.delay(0, 0, True)
    ledger = Ledger(tmp_path / "ledger.txt")
    tasks.ledger.delay(1, 0)
    # generous: setting the poison aside publishes to the machine's shared, busy caraway.dead
    wait_for(lambda: 1 in ledger.done(), 90, "the task behind the poison to run")
    # set aside, as its result says (the machine's dead-letter store is shared: other
    # tests, the fuzz suite among them, fill it)
    wait_for(lambda: poison.state == "FAILURE", 30, "the poison's FAILURE result")
    assert "set aside in the dead-letter store (worker_delivery_cap=3)" in str(poison.result)
    starts = [number for kind, number, _, _ in ledger.events() if kind == "S" and number == 0]
    assert len(starts) == 3  # worker_delivery_cap=3 runs; the 4th delivery is set aside
