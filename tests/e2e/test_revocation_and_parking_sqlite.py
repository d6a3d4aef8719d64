"""Revocations recorded on the broker, parked countdowns listed by inspect, producer parking."""

from __future__ import annotations

import time
from pathlib import Path

from caraway import states
from tests.helpers import Worker, wait_until


def _app():
    from proj.caraway import app

    return app


def test_a_node_started_after_a_revoke_still_honours_it(
    project: Path, workers: list[Worker]
) -> None:
    from proj.tasks import add

    result = add.apply_async((1, 1), countdown=1)
    _app().control.revoke(result.id)  # no node is up: only the broker remembers
    workers.append(Worker(project, "-c", "1").wait_ready())
    wait_until(lambda: result.state == states.REVOKED, timeout=20, message="REVOKED")
    assert add.delay(2, 2).get(timeout=10) == 4


def test_inspect_scheduled_lists_countdowns_parked_on_the_broker(
    project: Path, workers: list[Worker]
) -> None:
    from proj.tasks import add

    app = _app()
    app.conf.producer_parks_eta = True  # skip the hop: park straight from the producer
    result = add.apply_async((2, 3), countdown=3600)
    worker = Worker(project, "-c", "1").wait_ready()
    workers.append(worker)
    replies = wait_until(
        lambda: app.control.inspect(timeout=2).scheduled(), timeout=20, message="a scheduled reply"
    )
    entries = [entry for node in replies.values() for entry in node]
    parked = [entry for entry in entries if entry.get("parked")]
    assert [entry["request"]["id"] for entry in parked] == [result.id]
    assert result.state == states.PENDING


def test_producer_parked_countdown_runs_once_when_due(project: Path, workers: list[Worker]) -> None:
    from proj.tasks import add

    app = _app()
    app.conf.update(producer_parks_eta=True, broker_park_horizon=0.5)
    workers.append(Worker(project, "-c", "1").wait_ready())
    sent = time.monotonic()
    result = add.apply_async((4, 4), countdown=2)
    assert result.get(timeout=20) == 8
    assert time.monotonic() - sent >= 1.9
