"""Celery's task API on a real worker: request fields, hooks' einfo, replace, task logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import PROJ_APP, Worker, wait_until, write_project

TASKS = """
import json
from caraway import Task, group
from caraway.utils.log import get_task_logger
from .caraway import app

logger = get_task_logger(__name__)


class Recording(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        with open(args[0], "w") as handle:
            json.dump({"type": einfo.type.__name__, "exception": repr(einfo.exception),
                       "has_tb": "Traceback" in einfo.traceback,
                       "custom": self.custom_flag}, handle)


@app.task(base=Recording, custom_flag="on")
def fails(path):
    raise KeyError("missing")


@app.task(bind=True)
def request_fields(self):
    return {"tenant": self.request.tenant, "get": self.request.get("tenant"),
            "called_directly": self.request.called_directly,
            "shadow": self.request.shadow, "retries": self.request.retries}


@app.task
def logs(text):
    logger.warning("says %s", text)
    return text


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(values):
    return sum(values)


@app.task(bind=True)
def replaced(self, n):
    return self.replace(add.s(n, 100))


@app.task(bind=True)
def replaced_by_group(self, n):
    return self.replace(group(add.s(n, i) for i in range(3)))
"""


@pytest.fixture
def proj(project: Path) -> Path:
    return write_project(project, PROJ_APP, TASKS)


def test_task_api_as_celery_fills_it_on_a_worker(proj: Path, workers: list[Worker]) -> None:
    worker = Worker(proj, "-P", "solo").wait_ready()
    workers.append(worker)
    import proj.tasks as tasks

    fields = tasks.request_fields.apply_async(headers={"tenant": "acme"}, shadow="shown")
    assert fields.get(timeout=10) == {
        "tenant": "acme",
        "get": "acme",
        "called_directly": False,
        "shadow": "shown",
        "retries": 0,
    }
    assert "Task shown[" in wait_until(lambda: "Task shown[" in worker.log() and worker.log())

    record = proj / "einfo.json"
    with pytest.raises(KeyError):
        tasks.fails.delay(str(record)).get(timeout=10)
    import json

    assert json.loads(record.read_text()) == {
        "type": "KeyError",
        "exception": "KeyError('missing')",
        "has_tb": True,
        "custom": "on",
    }

    said = tasks.logs.delay("hello")
    said.get(timeout=10)
    line = f"proj.tasks.logs[{said.id}]: says hello"
    wait_until(lambda: line in worker.log(), message="the task log line with Celery's prefix")


def test_replace_keeps_the_task_id_its_chain_and_its_chord(
    proj: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(proj, "-c", "2").wait_ready())
    import proj.tasks as tasks

    from caraway import chain, chord

    assert tasks.replaced.delay(1).get(timeout=10) == 101
    assert tasks.replaced_by_group.delay(10).get(timeout=10) == [10, 11, 12]
    steps = chain(tasks.replaced.s(2), tasks.add.s(1000)).delay()
    assert steps.get(timeout=10) == 1102
    joined = chord([tasks.replaced.s(3), tasks.add.s(1, 1)], tasks.tsum.s()).delay()
    assert joined.get(timeout=10) == 105


def test_calling_a_task_directly_raises_what_retry_was_given(proj: Path) -> None:
    from caraway import Caraway

    app = Caraway("direct", broker="memory://")

    @app.task(bind=True)
    def flaky(self):  # type: ignore[no-untyped-def]
        raise self.retry(exc=ValueError("boom"))

    with pytest.raises(ValueError, match="boom"):
        flaky()
