"""Fair dispatch on real workers: no message waits in a busy process while another is idle.

A prefork child fetches a batch and runs it one task at a time; when one task runs long, the
rest of its batch (and, on RabbitMQ, what the broker pushes to it meanwhile) must go to the
idle child instead of waiting (``worker/handoff.py``). Found as a new user: on RabbitMQ a
short task sent to another queue during a 4 s task waited for it in 4 trials of 8.

Each run: a long task and three short ones queued behind it on one queue before the worker
starts (so the child that claims the long one claims them with it), then, once the long one
runs, short tasks on both of the worker's queues. Every short task must be done well before
the long one ends. The threads pool runs all its slots in one consumer: a free slot takes
the buffer at once, checked once on SQLite.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.brokers import delete_queues, open_broker
from tests.helpers import PROJ_APP, PROJ_TASKS, Worker, wait_until, write_project

pytestmark = pytest.mark.slow

#: the long task ends when the test creates its file, or after this long
LONG = 6.0
#: every short task must be done this soon after it was sent (the long one still running)
SHORT_DEADLINE = 2.0

TASKS = (
    PROJ_TASKS
    + """

@app.task(track_started=True)
def hold(path, seconds):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return 'released'
"""
)


@pytest.fixture(
    params=[
        ("sqlite", "prefork"),
        pytest.param(("redis", "prefork"), marks=pytest.mark.redis),
        pytest.param(("amqp", "prefork"), marks=pytest.mark.amqp),
        ("postgres", "prefork"),
        ("sqlite", "threads"),
    ],
    ids="-".join,
)
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, str, list[str]]]:
    kind, pool = request.param
    with open_broker(kind, tmp_path / "broker") as broker:
        for name, value in broker.env().items():
            monkeypatch.setenv(name, value)
        queues = [broker.queue, f"{broker.queue}-other"]
        write_project(tmp_path, tasks_source=TASKS)
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        try:
            yield tmp_path, pool, queues
        finally:
            for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
                del sys.modules[name]
            if kind == "amqp":
                delete_queues(5672, queues[1])


def test_short_tasks_do_not_wait_behind_a_long_one(
    setup: tuple[Path, str, list[str]], workers: list[Worker]
) -> None:
    project, pool, (queue, other) = setup
    from proj.tasks import add, hold

    release = project / "release"
    long = hold.apply_async((str(release), LONG), queue=queue)
    behind = [add.apply_async((n, n), queue=queue) for n in range(3)]
    worker = Worker(project, "-P", pool, "-c", "2", "-Q", f"{queue},{other}")
    workers.append(worker.wait_ready())
    try:
        wait_until(lambda: long.state == "STARTED", timeout=15, message="the long task to start")
        sent = time.monotonic()
        later = [add.apply_async((n, 10), queue=other) for n in range(3)]
        later += [add.apply_async((n, 20), queue=queue) for n in range(2)]
        shorts = behind + later
        wait_until(
            lambda: all(result.ready() for result in shorts),
            timeout=LONG,
            message="every short task to finish while the long one runs",
        )
        waited = time.monotonic() - sent
        assert not long.ready(), "the short tasks waited for the long one"
        assert waited < SHORT_DEADLINE, f"the short tasks took {waited:.2f}s"
        assert [result.get(timeout=1) for result in shorts] == [0, 2, 4, 10, 11, 12, 20, 21]
    finally:
        release.touch()
    assert long.get(timeout=LONG) == "released"


#: the threshold for the test below: far longer than the test waits, so only the idle
#: sibling rule can hand the short tasks over in time
IDLE_APP = (
    PROJ_APP
    + """
app.conf.worker_hand_off_after = float(os.environ.get('TEST_HAND_OFF_AFTER', 0.1))
"""
)


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def idle_setup(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, list[str]]]:
    kind = request.param
    with open_broker(kind, tmp_path / "broker") as broker:
        for name, value in broker.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TEST_HAND_OFF_AFTER", str(LONG))
        queues = [broker.queue, f"{broker.queue}-other"]
        write_project(tmp_path, app_source=IDLE_APP, tasks_source=TASKS)
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        try:
            yield tmp_path, queues
        finally:
            for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
                del sys.modules[name]
            if kind == "amqp":
                delete_queues(5672, queues[1])


def test_what_waits_behind_a_task_goes_at_once_to_a_sibling_waiting_on_an_empty_broker(
    idle_setup: tuple[Path, list[str]], workers: list[Worker]
) -> None:
    """The threshold (``worker_hand_off_after``) is longer than the long task here; the
    short ones queued behind it are still done within a second of its start, because the
    other child waits on an empty broker (on Redis, blocked on the other queue's list
    first, ``-Q other,queue``; woken by the give-back)."""
    project, (queue, other) = idle_setup
    from proj.tasks import add, hold

    release = project / "release"
    long = hold.apply_async((str(release), LONG), queue=queue)
    behind = [add.apply_async((n, n), queue=queue) for n in range(3)]
    worker = Worker(project, "-P", "prefork", "-c", "2", "-Q", f"{other},{queue}")
    workers.append(worker.wait_ready())
    try:
        wait_until(lambda: long.state == "STARTED", timeout=15, message="the long task to start")
        started = time.monotonic()
        wait_until(
            lambda: all(result.ready() for result in behind),
            timeout=LONG,
            interval=0.01,
            message="the short tasks behind the long one to finish while it runs",
        )
        waited = time.monotonic() - started
        assert not long.ready(), "the short tasks waited for the long one"
        assert waited < 1.0, f"the short tasks took {waited:.2f}s"
        assert [result.get(timeout=1) for result in behind] == [0, 2, 4]
    finally:
        release.touch()
    assert long.get(timeout=LONG) == "released"
