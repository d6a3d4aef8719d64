"""RabbitMQ failure paths on real workers: a node killed mid-task, a broker restart under load.

The restart test stops the machine's RabbitMQ app (``rabbitmqctl stop_app``) and always
starts it again in ``finally``, then waits until it accepts connections. Projects, queues
and workers come from the interop module's fixtures (seed app, private queue, Redis db 14).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest

from tests.helpers import Worker, wait_until
from tests.interop.test_celery_amqp import project, queue, seed_tasks

pytestmark = [pytest.mark.amqp, pytest.mark.redis, pytest.mark.slow]
__all__ = ["project", "queue"]  # fixtures used by name below

# appended to the seed's proj/tasks.py: late-ack tasks a killed node or a restart must not lose
LATE_TASKS = """

@app.task(acks_late=True)
def late_once(marker, seconds):
    # first run records itself and sleeps (the test kills the worker); later runs return
    import os, time
    runs = open(marker).read() if os.path.exists(marker) else ''
    open(marker, 'a').write('x')
    if not runs:
        time.sleep(seconds)
    return len(runs) + 1


@app.task(acks_late=True)
def tick(seconds):
    import time
    time.sleep(seconds)
    return seconds
"""


@pytest.fixture
def workers(project: Path) -> Iterator[list[Worker]]:
    """Caraway workers on the seed project with the late-ack tasks; all stopped afterwards."""
    with open(project / "proj" / "tasks.py", "a") as tasks:
        tasks.write(LATE_TASKS)
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def _rabbit_answers() -> bool:
    conn = amqp.Connection("127.0.0.1:5672", connect_timeout=1)
    try:
        conn.connect()
        conn.close()
        return True
    except Exception:
        conn.collect()
        return False


def test_task_of_a_killed_node_with_acks_late_runs_again_on_another(
    project: Path, workers: list[Any], tmp_path: Path
) -> None:
    first = Worker(project, "-c", "1", name="doomed")
    workers.append(first)
    first.wait_ready()
    marker = tmp_path / "late.marker"
    result = seed_tasks().late_once.delay(str(marker), 60)
    wait_until(marker.exists, timeout=15, message="the task to start")
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    second = Worker(project, "-c", "1", name="heir")
    workers.append(second)
    second.wait_ready()
    assert result.get(timeout=20) == 2
    assert marker.read_text() == "xx"  # ran twice: killed once, finished once


def test_every_task_finishes_across_a_rabbitmq_restart(project: Path, workers: list[Any]) -> None:
    worker = Worker(project, "-c", "2")
    workers.append(worker)
    worker.wait_ready()
    tick = seed_tasks().tick
    results = [tick.delay(0.1) for _ in range(40)]
    wait_until(lambda: sum(r.ready() for r in results) >= 4, timeout=20, message="progress")
    try:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
        time.sleep(2)  # the outage itself: workers must ride it out
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=60)
        wait_until(_rabbit_answers, timeout=60, interval=0.5, message="RabbitMQ back")
    assert [r.get(timeout=60) for r in results] == [0.1] * 40
    assert worker.process.poll() is None, worker.log()
    assert "lost" in worker.log() or "unreachable" in worker.log()
