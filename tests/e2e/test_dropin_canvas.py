"""Celery's canvas extras on a real worker: stamps on the wire, ~sig, chord.on_error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import PROJ_APP, Worker, wait_until, write_project

TASKS = """
from caraway.canvas import StampingVisitor
from .caraway import app


@app.task(bind=True)
def stamps(self, *args):
    return {"names": sorted(self.request.stamped_headers or []),
            "stamps": self.request.stamps}


@app.task
def add(x, y):
    return x + y


@app.task
def boom(*args):
    raise ValueError("header failed")


@app.task
def tsum(values):
    return sum(values)


@app.task
def record(path, *args):
    with open(path, "w") as handle:
        handle.write("errback ran")


class Monitoring(StampingVisitor):
    def on_signature(self, sig, **headers):
        return {"monitoring_id": "m-1"}
"""


@pytest.fixture
def proj(project: Path) -> Path:
    return write_project(project, PROJ_APP, TASKS)


def test_stamps_reach_the_task_and_canvas_extras_work(proj: Path, workers: list[Worker]) -> None:
    workers.append(Worker(proj, "-c", "2").wait_ready())
    import proj.tasks as tasks

    from caraway import chord, group

    sig = tasks.stamps.s()
    sig.stamp(visitor=tasks.Monitoring(), tenant="acme")
    assert sig.delay().get(timeout=10) == {
        "names": ["monitoring_id", "tenant"],
        "stamps": {"monitoring_id": "m-1", "tenant": "acme"},
    }
    members = group(tasks.stamps.s(), tasks.stamps.s())
    members.stamp(batch="b7")
    assert [r["stamps"] for r in members.delay().get(timeout=10)] == [{"batch": "b7"}] * 2

    assert ~tasks.add.s(2, 3) == 5

    marker = proj / "errback.txt"
    failing = chord([tasks.boom.s(), tasks.add.s(1, 1)], tasks.tsum.s())
    assert failing.on_error(tasks.record.si(str(marker))) is failing
    result = failing.delay()
    with pytest.raises(Exception):  # noqa: B017 - a ChordError or the header's ValueError
        result.get(timeout=10)
    wait_until(marker.exists, timeout=10, message="the chord's errback")


def test_skew_spreads_countdowns_as_celery(proj: Path) -> None:
    import proj.tasks as tasks

    from caraway import group

    spread = group(tasks.add.s(i, i) for i in range(4)).skew(start=1, stop=3)
    assert [t.options["countdown"] for t in spread.tasks] == [1.0, 2.0, 3.0, 3.0]
    spread = group(tasks.add.s(i, i) for i in range(3)).skew(start=0, step=10)
    assert [t.options["countdown"] for t in spread.tasks] == [0.0, 10.0, 20.0]


def test_eager_chord_runs_without_a_result_backend(proj: Path) -> None:
    from caraway import Caraway, chord

    app = Caraway("eagerchord", broker="redis://127.0.0.1:6379/8", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task
    def double(x: int) -> int:
        return x * 2

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    assert chord([double.s(1), double.s(2)], total.s()).delay().get() == 6
