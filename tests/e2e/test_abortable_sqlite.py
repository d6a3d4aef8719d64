"""``caraway.contrib.abortable`` with a real worker on the SQLite default: a running task
sees ``abort()`` at its next ``is_aborted()`` and stops cleanly; the state is Celery's."""

from __future__ import annotations

from pathlib import Path

from caraway import states
from caraway.contrib.abortable import ABORTED, AbortableAsyncResult
from tests.helpers import PROJ_APP, Worker, wait_until, write_project

TASKS = """
import time
from caraway.contrib.abortable import AbortableTask
from .caraway import app


@app.task(bind=True, base=AbortableTask)
def patient(self, seconds, started):
    open(started, "w").close()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if self.is_aborted():
            return "aborted"
        time.sleep(0.05)
    return "finished"
"""


def test_an_aborted_task_stops_at_its_next_check(project: Path, workers: list[Worker]) -> None:
    write_project(project, PROJ_APP, TASKS)
    workers.append(Worker(project, "-c", "1", "-P", "solo").wait_ready())
    from proj.tasks import patient

    started = project / "started"
    result = patient.delay(20, str(started))
    assert isinstance(result, AbortableAsyncResult)
    wait_until(started.exists, timeout=10, message="the task to start")
    assert not result.is_aborted()
    result.abort()
    assert result.state == ABORTED and result.is_aborted()
    assert result.get(timeout=10) == "aborted"  # ABORTED is not ready: get() waits for the end
    assert result.state == states.SUCCESS and not result.is_aborted()
