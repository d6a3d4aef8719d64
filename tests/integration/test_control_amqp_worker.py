"""Remote control of a real caraway worker on RabbitMQ, through ``app.control`` (pidbox).

The vhost is shared with whatever else runs on this machine, so each worker has a node
name private to the test and every request names it as the destination. The seed project,
its private queues (deleted afterwards) and the Redis results db come from test_amqp_worker.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Worker, wait_until
from tests.integration.test_amqp_worker import (
    consumers_of,
    project,
    queues,
    results_db,
    runs,
    seed,
    workers,
)

pytestmark = [pytest.mark.amqp, pytest.mark.redis, pytest.mark.slow]
__all__ = ["project", "queues", "results_db", "workers"]  # fixtures used by name below


@pytest.fixture(autouse=True)
def _close_control(project: Path) -> Iterator[None]:
    """app.close() leaves app.control's mailbox open: close its connection here."""
    yield
    app = sys.modules.get("proj.caraway")
    if app is not None and app.app._control is not None:
        app.app._control.close()


def control() -> Any:
    from proj.caraway import app  # type: ignore[import-not-found]  # the seed project's

    return app.control


def start(project: Path, workers: list[Worker], *args: str) -> tuple[Worker, str]:
    """A worker with a node name private to this test, and its full hostname once it answers."""
    name = f"h15ctl{uuid.uuid4().hex[:8]}"
    worker = Worker(project, *args, name=name)
    workers.append(worker)
    worker.wait_ready()

    def answered() -> str | None:
        # RabbitMQ may be restarting under another test: a failed round is just retried
        try:
            replies = control().inspect(timeout=1).ping() or {}
        except Exception:
            return None
        return next((node for node in replies if node.startswith(f"{name}@")), None)

    hostname: str = wait_until(answered, timeout=30, interval=0.2, message=f"{name} to answer")
    return worker, hostname


def test_inspect_ping_active_and_stats_reach_a_rabbitmq_worker(
    project: Path, workers: list[Worker]
) -> None:
    worker, node = start(project, workers, "-c", "1")
    inspect = control().inspect(destination=[node], timeout=5)
    assert inspect.ping() == {node: {"ok": "pong"}}
    result = seed().snooze.delay(3)

    def running() -> list[dict[str, Any]]:
        active = inspect.active() or {}
        return [task for task in active.get(node, []) if task["id"] == result.id]

    (task,) = wait_until(running, timeout=10, interval=0.2, message="the task in active()")
    assert task["name"] == "proj.tasks.snooze"
    assert task["hostname"] == node and task["acknowledged"] is True
    assert task["worker_pid"] in worker.children()
    stats = inspect.stats()
    assert stats is not None
    assert stats[node]["pid"] == worker.process.pid
    assert result.get(timeout=10) == 3
    # the child reports "done" to its supervisor a moment after the result is stored
    wait_until(lambda: inspect.active() == {node: []}, timeout=10, message="active() empty")


def test_rate_limit_set_remotely_spaces_out_the_task(project: Path, workers: list[Worker]) -> None:
    _, node = start(project, workers, "-c", "1")
    replies = control().rate_limit(
        "proj.tasks.record", "2/s", destination=[node], reply=True, timeout=5
    )
    assert replies == [{node: {"ok": "new rate limit set successfully"}}]
    evidence = project / "rate.txt"
    record = seed().record
    sent = [record.delay(str(evidence), n) for n in range(4)]
    assert [r.get(timeout=15) for r in sent] == [0, 1, 2, 3]
    times = sorted(at for _, at in runs(evidence))
    # 4 runs at 2/s: at least three half-second gaps between the first and the last
    assert times[-1] - times[0] >= 1.2


def test_add_consumer_makes_the_worker_consume_a_new_queue(
    project: Path, queues: Callable[[str], str], workers: list[Worker]
) -> None:
    _, node = start(project, workers, "-c", "1")
    extra = queues("extra")
    replies = control().add_consumer(extra, destination=[node], reply=True, timeout=5)
    assert replies is not None and len(replies) == 1 and "ok" in replies[0][node]
    active = control().inspect(destination=[node], timeout=5).active_queues()
    assert active is not None
    assert [q["name"] for q in active[node]] == [os.environ["TEST_QUEUE"], extra]
    assert seed().add.apply_async((5, 6), queue=extra).get(timeout=15) == 11
    assert consumers_of(extra)  # a real consumer on the broker, not just the reply


def test_shutdown_request_stops_the_rabbitmq_worker_cleanly(
    project: Path, workers: list[Worker]
) -> None:
    worker, node = start(project, workers, "-c", "1")
    control().shutdown(destination=[node])
    wait_until(lambda: worker.process.poll() is not None, timeout=20, message="worker exit")
    assert worker.process.returncode == 0, worker.log()
    assert control().inspect(destination=[node], timeout=1).ping() is None
