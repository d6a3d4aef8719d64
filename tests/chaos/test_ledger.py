"""The delivery ledger under faults (tests/chaos/ledger.py): per broker and ack mode, a
countdown longer than the visibility timeout, and a mixed Celery/caraway fleet on Redis.

The short variants run in CI (a few dozen tasks, a few faults each). The long ones, and the
same scenarios on Celery alone for comparison, are marked ``soak`` (deselected by default):

    CARAWAY_LEDGER_REPORT=ledger.jsonl .venv/bin/python -m pytest -m soak -s \
        tests/chaos/test_ledger.py

Figures: docs/reliability.md. Two worker nodes (prefork, one child each) on the 2-core box.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.ledger import Faults, Fleet, Ledger, Send, produce, report, running, write_projects
from tests.harness.brokers import open_broker
from tests.harness.fixtures import processes
from tests.harness.processes import Process, Processes

__all__ = ["processes"]  # a fixture, used by name

pytestmark = [pytest.mark.slow]

#: what each broker's visibility timeout is compressed to (seconds), where it has one
VISIBILITY = 3.0
OPTIONS: dict[str, dict[str, Any]] = {
    "sqlite": {"visibility_timeout": VISIBILITY},
    "redis": {"visibility_timeout": VISIBILITY},
    "postgres": {"visibility_timeout": VISIBILITY},
    "amqp": {"confirm_publish": True},
}
#: faults each broker can suffer in the short variant
FAULTS = {
    "sqlite": ["kill_child", "kill_parent", "freeze"],
    "redis": ["kill_child", "kill_parent", "freeze", "cut", "restart_broker"],
    "amqp": ["kill_child", "kill_parent", "freeze", "cut"],
    "postgres": ["kill_child", "kill_parent", "freeze", "cut"],
}


@dataclass
class Scenario:
    kind: str
    acks_late: bool = True
    fleet: str = "caraway"  # or "celery", or "mixed" (one node of each)
    count: int = 40
    spacing: float = 0.05
    seconds: float = 0.2
    countdown: float | None = None
    faults: list[str] = field(default_factory=list)
    interval: float = 0.8
    private_rabbit: bool = False
    seed: int = 16
    #: numbers sent as poison: their task kills its process on every delivery
    poison: tuple[int, ...] = ()
    freeze_max: float = 2.5
    #: start the faults once every publish returned: a cut or a restart that loses a
    #: publish's reply makes the producer send it again, a duplicate by design on Redis and
    #: RabbitMQ (docs/reliability.md, case 3); the CI variants keep their verdict to the
    #: workers' side, the long runs measure both
    faults_after_publishing: bool = False

    @property
    def name(self) -> str:
        ack = "late" if self.acks_late else "early"
        extra = f"-countdown{self.countdown:g}" if self.countdown else ""
        if self.freeze_max > VISIBILITY:
            extra += f"-freeze{self.freeze_max:g}"
        return f"{self.fleet}-{self.kind}-{ack}{extra}"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = write_projects(tmp_path / "work")
    monkeypatch.syspath_prepend(str(base))
    monkeypatch.setenv("TEST_LEDGER", str(tmp_path / "ledger.txt"))
    _forget()
    try:
        yield base
    finally:
        _forget()


def _forget() -> None:
    for name in [m for m in sys.modules if m in {"proj", "celeryproj"} or m.startswith("proj.")]:
        del sys.modules[name]


def run_scenario(
    scenario: Scenario,
    workdir: Path,
    processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """Run one scenario end to end; its classified figures (also reported)."""
    network = scenario.kind != "sqlite"
    with open_broker(
        scenario.kind,
        workdir.parent / "broker",
        proxied=network and "cut" in scenario.faults,
        private_rabbit=scenario.private_rabbit,
    ) as broker:
        for name, value in broker.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TEST_ACKS_LATE", "1" if scenario.acks_late else "0")
        monkeypatch.setenv("TEST_TRANSPORT_OPTIONS", json.dumps(OPTIONS[scenario.kind]))
        if scenario.kind == "amqp" and scenario.fleet != "caraway":
            # Celery's results elsewhere than the SQLite file caraway uses: Celery has no
            # sqlite:// results; its results are not part of the ledger anyway
            monkeypatch.setenv("TEST_CELERY_BACKEND", "rpc://")
        processes.workdir = workdir
        fleet = Fleet(processes, _node_starter(scenario, processes, workdir)).start(2)
        publish, close = _publisher(scenario)
        send = Send()
        ledger = Ledger(Path(str(workdir.parent / "ledger.txt")))
        faults = Faults(
            fleet, broker, scenario.faults, scenario.seed, scenario.interval, scenario.freeze_max
        )
        started = time.monotonic()
        producer = produce(
            publish, range(scenario.count), spacing=scenario.spacing, send=send, close=close
        )
        if scenario.faults_after_publishing:
            producer.join(timeout=300)
        with running(faults):
            producer.join(timeout=300)
            # faults go on while the backlog drains, until most of it ran
            ledger.settle(send, quiet=60, timeout=60, fraction=0.8)
        fleet.heal()
        quiet = (scenario.countdown or 0) + VISIBILITY + 8
        ledger.settle(send, quiet=quiet, timeout=120 + (scenario.countdown or 0))
        if scenario.countdown:
            # a countdown run twice shows up once its second eta passes a sweep: look again
            time.sleep(VISIBILITY + 1)
        fleet.stop()
        figures = ledger.classify(send)
        figures["dead_lettered_poison"] = _dead_lettered(scenario, send)
        figures["faults"] = dict(faults.counts)
        figures["finished_then_killed"] = ledger.killed_after_finishing(
            figures["finished_twice"], faults.killed
        )
        report(
            scenario.name, figures, faults if scenario.faults else None, time.monotonic() - started
        )
        return figures


def _node_starter(
    scenario: Scenario, processes: Processes, workdir: Path
) -> Callable[[str], Process]:
    def start(name: str) -> Process:
        celery = scenario.fleet == "celery" or (scenario.fleet == "mixed" and name == "n2")
        if celery:
            return processes.celery_worker("-c", "1", "-Q", _queue(), app="celeryproj", name=name)
        return processes.caraway_worker("-c", "1", name=name)

    return start


def _queue() -> str:
    return os.environ["TEST_QUEUE"]


def _publisher(scenario: Scenario) -> tuple[Callable[[int], str | None], Callable[[], None]]:
    """The producer's publish, and what closes its connections (in the producer's thread)."""
    module = "celeryproj" if scenario.fleet == "celery" else "proj.tasks"
    task = importlib.import_module(module).ledger
    options: dict[str, Any] = {}
    if scenario.countdown:
        options["countdown"] = scenario.countdown

    def publish(number: int) -> str | None:
        poison = number in scenario.poison
        sent = task.apply_async((number, scenario.seconds, poison), **options)
        return str(sent.id) if poison else None

    return publish, task.app.close


def _dead_lettered(scenario: Scenario, send: Send) -> int:
    """How many poison messages were set aside, as their results say (FAILURE, "set aside in
    the dead-letter store"): the store itself is shared on the machine's RabbitMQ, where
    other tests (the fuzz suite) fill it."""
    if not send.poison:
        return 0
    app = importlib.import_module("proj.caraway").app
    found = 0
    for task_id in send.poison.values():  # settled before the run settled: no wait needed
        result = app.AsyncResult(task_id)
        if result.state == "FAILURE" and "dead-letter store" in str(result.result):
            found += 1
    return found


def _assert_at_least_once(figures: dict[str, Any]) -> None:
    assert figures["never"] == [], f"lost: {figures['never']}"
    assert figures["never_finished"] == [], f"started, never finished: {figures}"
    # a finished task runs again only when the schedule killed the process that finished it
    # before its result and ack were written (at least once: the ack comes after the run)
    unexplained = set(figures["finished_twice"]) - set(figures.get("finished_then_killed", []))
    assert not unexplained, f"a finished task ran again: {figures}"


SHORT = [
    Scenario("sqlite", faults=FAULTS["sqlite"], poison=(20,)),
    Scenario(
        "redis",
        count=50,
        faults=FAULTS["redis"],
        poison=(20,),
        interval=0.5,
        faults_after_publishing=True,
    ),
    # no poison here: the machine's RabbitMQ has one dead-letter queue, shared and often
    # busy (the fuzz suite fills it); test_poison_amqp.py and the long runs cover it
    Scenario("amqp", count=50, faults=FAULTS["amqp"], interval=0.5, faults_after_publishing=True),
]


@pytest.mark.redis
@pytest.mark.amqp
@pytest.mark.parametrize("scenario", SHORT, ids=lambda s: s.name)
def test_acks_late_ledger_loses_nothing_under_faults(
    scenario: Scenario, workdir: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = run_scenario(scenario, workdir, processes, monkeypatch)
    assert figures["publish_raised"] <= 2, figures  # the producer rides out the faults
    _assert_at_least_once(figures)
    # the poison message ended in the dead-letter store, and the queue kept flowing
    assert figures["dead_lettered_poison"] == len(scenario.poison), figures


@pytest.mark.redis
def test_countdown_past_the_visibility_timeout_runs_once(
    workdir: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = Scenario("redis", count=12, spacing=0.02, countdown=VISIBILITY * 2)
    figures = run_scenario(scenario, workdir, processes, monkeypatch)
    assert figures["once"] == 12, figures


@pytest.mark.redis
def test_mixed_celery_and_caraway_fleet_loses_nothing(
    workdir: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = Scenario("redis", fleet="mixed", faults=["kill_child", "freeze"])
    figures = run_scenario(scenario, workdir, processes, monkeypatch)
    assert figures["never"] == [] and figures["never_finished"] == [], figures
    assert set(figures["runs_by_side"]) == {"caraway", "celery"}, figures
    # a Celery node holds prefetched messages without renewing their claims (kombu's
    # visibility timeout), and its requeue of a lost task races a sweep: a task that finished
    # twice must have had a Celery run (docs/reliability.md); caraway alone never does this
    for number, sides in figures["finished_twice_sides"].items():
        assert "celery" in sides, (number, figures)


def _soak(kind: str, fleet: str, acks_late: bool) -> Scenario:
    faults = list(FAULTS[kind])
    if kind == "amqp":
        faults.append("restart_broker")  # a private node: the machine's RabbitMQ stays up
    return Scenario(
        kind,
        acks_late=acks_late,
        fleet=fleet,
        count=300,
        spacing=0.03,
        seconds=0.2,
        faults=faults,
        interval=1.5,
        private_rabbit=kind == "amqp",
        poison=(50, 150) if fleet != "mixed" else (),
    )


SOAK = [
    *[_soak(kind, "caraway", late) for kind in FAULTS for late in (True, False)],
    *[_soak(kind, "celery", late) for kind in ("redis", "amqp") for late in (True, False)],
    _soak("redis", "mixed", True),
]
#: frozen longer than the visibility timeout: another node takes the frozen one's claims
SOAK_FREEZE = [
    Scenario("redis", fleet=fleet, count=150, spacing=0.03, seconds=0.2, faults=["freeze"],
             interval=2.0, freeze_max=VISIBILITY * 2)
    for fleet in ("caraway", "celery")
]  # fmt: skip
SOAK_COUNTDOWN = [
    *[
        Scenario("redis", fleet=fleet, count=20, spacing=0.02, countdown=VISIBILITY * 2)
        for fleet in ("caraway", "celery")
    ],
    *[
        Scenario(kind, count=20, spacing=0.02, countdown=VISIBILITY * 2)
        for kind in ("sqlite", "postgres")
    ],
]


@pytest.mark.soak
@pytest.mark.parametrize("scenario", SOAK + SOAK_FREEZE + SOAK_COUNTDOWN, ids=lambda s: s.name)
def test_ledger_soak(
    scenario: Scenario, workdir: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The long runs docs/reliability.md publishes; caraway with acks_late must hold the
    same line as in CI, the other figures are measured, not asserted."""
    figures = run_scenario(scenario, workdir, processes, monkeypatch)
    if scenario.fleet == "caraway" and scenario.acks_late:
        if scenario.kind in ("redis", "amqp"):
            # a publish retried after a cut or a restart lost its reply: sent twice (case 3)
            faults = figures.get("faults", {})
            assert len(figures["finished_twice"]) <= faults.get("cut", 0) + faults.get(
                "restart_broker", 0
            ), figures
            figures = {**figures, "finished_twice": {}}
        if scenario.freeze_max > VISIBILITY:
            # a node frozen mid-task past the visibility timeout cannot renew its claim:
            # another node runs the task too (docs/reliability.md); nothing may be lost
            assert figures["never"] == [] and figures["never_finished"] == [], figures
            return
        _assert_at_least_once(figures)
        if scenario.countdown:
            assert figures["once"] == scenario.count, figures
