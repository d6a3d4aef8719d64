"""The seed's calling examples against real worker processes on the embedded default."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from caraway import states
from caraway.exceptions import ResultsDisabled, TimeoutError
from tests.helpers import Worker, wait_until


def _tasks():  # imported late: the project fixture creates the package
    import proj.tasks

    return proj.tasks


@pytest.mark.parametrize(
    "pool", [["-c", "2"], ["-P", "threads", "-c", "2"]], ids=["prefork", "threads"]
)
def test_seed_calling_examples_on_a_real_worker(
    project: Path, workers: list[Worker], pool: list[str]
) -> None:
    workers.append(Worker(project, *pool).wait_ready())
    tasks = _tasks()
    assert tasks.add.delay(2, 2).get(timeout=10) == 4
    assert tasks.add.apply_async((2, 2)).get(timeout=10) == 4
    assert tasks.add(2, 2) == 4
    with pytest.raises(TypeError):
        tasks.add.delay(2)
    failing = tasks.boom.delay()
    with pytest.raises(ValueError, match="kaboom"):
        failing.get(timeout=10)
    assert isinstance(failing.get(propagate=False), ValueError)
    assert failing.failed() and not failing.successful()
    assert failing.state == "FAILURE"
    assert "ValueError: kaboom" in (failing.traceback or "")
    from proj.caraway import app

    assert app.AsyncResult("this-id-does-not-exist").state == "PENDING"


def test_banner_names_transport_concurrency_queues_and_tasks(
    project: Path, workers: list[Worker]
) -> None:
    worker = Worker(project, "-c", "2", "-Q", "celery,lopri").wait_ready()
    workers.append(worker)
    log = worker.log()
    assert f"sqlite:///{project / 'proj' / 'caraway.sqlite3'}" in log  # beside proj/caraway.py
    assert "concurrency: 2 (prefork)" in log
    assert "task events: OFF" in log
    assert ".> lopri" in log and ".> celery" in log
    assert "  . proj.tasks.add" in log


def test_countdown_task_waits_for_its_eta_and_runs_on_its_queue(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1", "-Q", "lopri").wait_ready())
    sent = time.monotonic()
    result = _tasks().add.apply_async((2, 2), queue="lopri", countdown=1.5)
    assert result.get(timeout=15) == 4
    assert time.monotonic() - sent >= 1.4


def test_started_state_is_visible_during_a_slow_task_with_track_started(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    result = _tasks().slow.delay(1.5)
    wait_until(lambda: result.state == states.STARTED, timeout=10, message="STARTED")
    assert result.info["pid"] > 0
    assert result.get(timeout=10) == 1.5
    assert result.state == states.SUCCESS


def test_retried_task_goes_through_retry_states_then_succeeds(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    result = _tasks().flaky.delay(str(project / "flaky-count"), 2)
    seen: list[str] = []

    def finished() -> bool:
        state = result.state
        if not seen or seen[-1] != state:
            seen.append(state)
        return state == states.SUCCESS

    wait_until(finished, timeout=20, interval=0.005, message="SUCCESS after retries")
    assert result.get(timeout=1) == 2
    assert seen.count(states.RETRY) >= 1
    assert seen[-1] == states.SUCCESS


def test_result_expires_after_result_expires(project: Path, workers: list[Worker]) -> None:
    workers.append(Worker(project, "-c", "1", env={"TEST_RESULT_EXPIRES": "1"}).wait_ready())
    result = _tasks().add.delay(1, 1)
    assert result.get(timeout=10) == 2
    # a new handle each time: a handle caches a final result, as Celery's does
    wait_until(
        lambda: result.app.AsyncResult(result.id).state == states.PENDING,
        timeout=10,
        interval=0.1,
        message="the result to expire",
    )


def test_get_times_out_with_caraway_timeout_error(project: Path) -> None:
    result = _tasks().add.delay(1, 1)  # no worker running
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)


def test_results_disabled_when_broker_given_without_backend(project: Path) -> None:
    from caraway import Caraway

    app = Caraway(
        "nobackend", broker=f"sqlite:///{project / 'other.sqlite3'}", set_as_current=False
    )

    @app.task(name="nobackend.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)
    with pytest.raises(ResultsDisabled, match="result_backend"):
        result.get(timeout=1)


def test_killed_child_task_is_redelivered_with_acks_late(
    project: Path, workers: list[Worker]
) -> None:
    worker = Worker(project, "-c", "2").wait_ready()
    workers.append(worker)
    result = _tasks().die_once.delay(str(project / "died"))
    assert result.get(timeout=20) == "survived"
    assert "killed by SIGKILL" in worker.log()


def test_killed_child_without_reject_on_worker_lost_fails_with_worker_lost(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    marker = project / "runs"
    result = _tasks().die_always.delay(str(marker))
    from caraway.exceptions import WorkerLostError

    with pytest.raises(WorkerLostError):
        result.get(timeout=20)
    # redelivered after the FAILURE was stored: acked without running again
    assert _tasks().add.delay(1, 1).get(timeout=10) == 2
    assert marker.read_text() == "x"


def test_message_that_keeps_killing_its_child_is_dead_lettered(
    project: Path, workers: list[Worker]
) -> None:
    worker = Worker(project, "-c", "1", env={"CARAWAY_WORKER_DELIVERY_CAP": "2"}).wait_ready()
    workers.append(worker)
    from caraway.exceptions import WorkerLostError

    result = _tasks().always_dies.delay()
    with pytest.raises(WorkerLostError, match="delivered 3 times"):
        result.get(timeout=30)
    assert _tasks().add.delay(2, 3).get(timeout=10) == 5
    from proj.caraway import app

    admin = app.admin()
    try:
        letters = admin.dead_letters()
    finally:
        admin.close()
    assert [letter.message.headers["id"] for letter in letters] == [result.id]


def test_warm_shutdown_lets_the_running_task_finish(project: Path) -> None:
    worker = Worker(project, "-c", "1").wait_ready()
    try:
        result = _tasks().slow.delay(1.0)
        wait_until(lambda: result.state == states.STARTED, timeout=10, message="STARTED")
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(timeout=20)
        assert result.state == states.SUCCESS
    finally:
        worker.stop()


def test_app_start_runs_the_worker_from_the_app_module(project: Path) -> None:
    """The seed's ``if __name__ == '__main__': app.start()``: the module runs as __main__
    while the task modules import it under its own name; both apps see the tasks."""
    import subprocess
    import sys

    app_module = project / "proj" / "caraway.py"
    app_module.write_text(
        app_module.read_text() + "\nif __name__ == '__main__':\n    app.start()\n"
    )
    pidfile = project / "start.pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "proj.caraway", "worker", "-c", "1", f"--pidfile={pidfile}"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(pidfile.exists, timeout=30, message="the worker to start")
        assert _tasks().add.delay(20, 22).get(timeout=15) == 42
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert "  . proj.tasks.add" in output


_COUNTING_APP = """
import os
from caraway import Caraway


class App(Caraway):
    def new_backend(self):
        with open(os.environ["TEST_BACKEND_OPENS"], "a") as record:
            record.write(f"{os.getpid()}\\n")
        return super().new_backend()


app = App('proj', include=['proj.tasks'])
"""


def test_prefork_supervisor_leaves_the_result_backend_to_its_children(
    project: Path, workers: list[Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor opens the backend only for a lost task: opened at start (after the
    fork), building its client copied pages it shared with the children (W5)."""
    (project / "proj" / "caraway.py").write_text(_COUNTING_APP)
    opens = project / "backend-opens"
    monkeypatch.setenv("TEST_BACKEND_OPENS", str(opens))
    worker = Worker(project, "-c", "1").wait_ready()
    workers.append(worker)
    assert _tasks().add.delay(2, 2).get(timeout=20) == 4  # a child stored it
    by_pid = {int(line) for line in opens.read_text().split()}
    assert set(worker.children()) <= by_pid
    assert worker.process.pid not in by_pid
