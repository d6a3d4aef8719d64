"""Production execution features on real workers (embedded SQLite default)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from caraway import states
from caraway.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from tests.helpers import Worker, wait_until


def _tasks():
    import proj.tasks

    return proj.tasks


def test_soft_time_limit_raises_inside_the_task_so_it_can_clean_up(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    assert _tasks().soft_limited.delay(5).get(timeout=10) == "cleaned up"


def test_hard_time_limit_kills_the_child_and_the_worker_keeps_serving(
    project: Path, workers: list[Worker]
) -> None:
    worker = Worker(project, "-c", "1").wait_ready()
    workers.append(worker)
    result = _tasks().hard_limited.delay(30)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=15)
    assert _tasks().add.delay(2, 2).get(timeout=15) == 4
    assert "hard time limit" in worker.log()


def test_per_call_soft_time_limit_overrides_the_task(project: Path, workers: list[Worker]) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    result = _tasks().slow.apply_async((5,), soft_time_limit=0.3)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=10)


def test_rate_limit_of_5_per_second_holds_across_children(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "2").wait_ready())
    out = project / "stamps"
    results = [_tasks().limited.delay(str(out)) for _ in range(50)]
    for result in results:
        result.get(timeout=60)
    stamps = sorted(float(line) for line in out.read_text().split())
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 4.0 <= rate <= 6.0, f"observed {rate:.2f} tasks/s"


def test_expired_message_is_revoked_not_run(project: Path, workers: list[Worker]) -> None:
    result = _tasks().add.apply_async((1, 1), expires=0.2)
    time.sleep(0.4)  # the message must expire before any worker exists
    workers.append(Worker(project, "-c", "1").wait_ready())
    wait_until(lambda: result.state == states.REVOKED, timeout=10, message="REVOKED")


def test_child_recycling_after_n_tasks_loses_nothing(project: Path, workers: list[Worker]) -> None:
    worker = Worker(project, "-c", "1", "--max-tasks-per-child", "3").wait_ready()
    workers.append(worker)
    results = [_tasks().add.delay(i, i) for i in range(10)]
    assert [result.get(timeout=20) for result in results] == [i + i for i in range(10)]
    assert worker.log().count("max per child") >= 3


def test_child_that_exits_mid_task_is_replaced_and_the_task_fails_worker_lost(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    with pytest.raises(WorkerLostError):
        _tasks().exits_hard.delay().get(timeout=15)
    assert _tasks().add.delay(3, 3).get(timeout=15) == 6


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_async_tasks_run_concurrently_on_one_child(
    project: Path, workers: list[Worker], pool: str
) -> None:
    workers.append(Worker(project, "-P", pool, "-c", "1").wait_ready())
    started = time.monotonic()
    results = [_tasks().nap.delay(0.5) for _ in range(100)]
    assert [result.get(timeout=30) for result in results] == [0.5] * 100
    assert time.monotonic() - started < 15


def test_async_task_over_its_soft_limit_is_cancelled(project: Path, workers: list[Worker]) -> None:
    workers.append(Worker(project, "-P", "threads", "-c", "1").wait_ready())
    with pytest.raises(SoftTimeLimitExceeded):
        _tasks().long_nap.delay(10).get(timeout=10)
