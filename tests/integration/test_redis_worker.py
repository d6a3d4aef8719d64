"""The seed's calling examples on real caraway workers with Redis as broker and backend.

Redis db 10 is ours alone: flushed before and after each test. Workers are real
``caraway worker`` processes, stopped in fixtures whatever the test does.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from caraway import states
from tests.helpers import Worker, wait_until
from tests.integration.redisproj import clean_db, redis_project, tasks

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/10"


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    yield from clean_db(URL)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: redis.Redis) -> Iterator[Path]:
    yield from redis_project(tmp_path, monkeypatch, URL)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def test_seed_calling_examples_run_on_a_redis_worker(
    project: Path, workers: list[Worker], db: redis.Redis
) -> None:
    worker = Worker(project, "-c", "2").wait_ready()
    workers.append(worker)
    proj = tasks()
    assert proj.add.delay(2, 2).get(timeout=10) == 4
    assert proj.add.apply_async((2, 3)).get(timeout=10) == 5
    failing = proj.boom.delay()
    with pytest.raises(ValueError, match="kaboom"):
        failing.get(timeout=10)
    assert isinstance(failing.get(propagate=False), ValueError)
    assert failing.state == states.FAILURE
    assert "ValueError: kaboom" in (failing.traceback or "")
    assert proj.app.AsyncResult("no-such-task-id").state == states.PENDING
    assert "redis://127.0.0.1:6379/10" in worker.log()
    # Celery's result key, readable by anyone who knows the layout
    assert db.exists(f"celery-task-meta-{failing.id}")
    assert db.llen("celery") == 0
    # a result can be seen a moment before its early ack lands: it travels with the next claim
    wait_until(lambda: db.hlen("unacked") == 0, timeout=5, message="every message acked")


def test_countdown_on_queue_lopri_waits_for_its_eta(
    project: Path, workers: list[Worker], db: redis.Redis
) -> None:
    workers.append(Worker(project, "-c", "1", "-Q", "lopri").wait_ready())
    sent = time.monotonic()
    result = tasks().add.apply_async((2, 2), queue="lopri", countdown=1.5)
    assert result.get(timeout=15) == 4
    assert time.monotonic() - sent >= 1.4
    assert db.sismember("_kombu.binding.lopri", "lopri\x06\x16\x06\x16lopri")


def test_started_state_is_visible_during_a_slow_task_with_track_started(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    result = tasks().slow.delay(1.0)
    wait_until(lambda: result.state == states.STARTED, timeout=10, message="STARTED")
    assert result.info["pid"] > 0
    assert result.get(timeout=10) == 1.0
    assert result.state == states.SUCCESS


def test_retried_task_goes_through_retry_states_then_succeeds(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    result = tasks().flaky.delay(str(project / "flaky-count"), 2)
    seen: list[str] = []

    def finished() -> bool:
        state: str = result.state
        if not seen or seen[-1] != state:
            seen.append(state)
        return state == states.SUCCESS

    wait_until(finished, timeout=20, interval=0.005, message="SUCCESS after retries")
    assert result.get(timeout=1) == 2
    assert states.RETRY in seen
    assert seen[-1] == states.SUCCESS


def test_killed_child_task_is_redelivered_with_acks_late(
    project: Path, workers: list[Worker], db: redis.Redis
) -> None:
    worker = Worker(project, "-c", "1").wait_ready()
    workers.append(worker)
    result = tasks().die_once.delay(str(project / "died"))
    assert result.get(timeout=20) == "survived"
    assert "killed by SIGKILL" in worker.log()
    wait_until(lambda: db.hlen("unacked") == 0, timeout=5, message="unacked to drain")


def test_two_workers_share_a_batch_and_each_task_runs_once(
    project: Path, workers: list[Worker], db: redis.Redis
) -> None:
    workers.append(Worker(project, "-c", "1", name="w1").wait_ready())
    workers.append(Worker(project, "-P", "threads", "-c", "2", name="w2").wait_ready())
    results = [tasks().mark.delay("seen", n) for n in range(60)]
    assert [r.get(timeout=20) for r in results] == list(range(60))
    assert db.scard("seen") == 60
    assert db.llen("seen:runs") == 60


def _commands_during(seconds: float, db: int) -> list[str]:
    """The commands Redis ran on ``db`` (scripts' own calls included) over ``seconds``."""
    watcher = redis.Redis.from_url(URL)
    marker = f"end-{uuid.uuid4().hex}"
    seen: list[str] = []
    try:
        with watcher.monitor() as monitor:
            timer = threading.Timer(seconds, lambda: redis.Redis.from_url(URL).echo(marker))
            timer.start()
            try:
                for event in monitor.listen():
                    command = str(event["command"])
                    if marker in command:
                        return seen
                    if event.get("db") == db:
                        seen.append(command)
            finally:
                timer.cancel()
    finally:
        watcher.close()
    raise AssertionError("MONITOR ended before the marker")


def _renewals(commands: list[str]) -> set[str]:
    """The renewals among ``commands``, by the time each renews to (the RENEW script:
    three keys, the claims index first; the claim script has thirteen and more). A script
    the server had not cached runs twice, around its SCRIPT LOAD, with the same time."""
    return {
        c.rsplit(" ", 1)[-1]
        for c in commands
        if c.startswith("EVALSHA ") and " 3 unacked_index " in c
    }


def test_an_idle_worker_only_heartbeats_and_renews_the_claims_of_a_busy_child(
    project: Path, workers: list[Worker], db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an idle node polled every list once a second and renewed its children's (empty) claims
    # every few: an idle fleet of 20 cost Redis 3.3x Celery's commands (W9)
    monkeypatch.setenv("TEST_TRANSPORT_OPTIONS", json.dumps({"visibility_timeout": 2}))
    workers.append(Worker(project, "-c", "1").wait_ready())  # renews every 0.5 s
    assert tasks().add.delay(1, 1).get(timeout=10) == 2
    # its ack travels with the next claim, in one write: once it landed, so did that claim
    wait_until(lambda: db.hlen("unacked") == 0, timeout=5, message="the ack and last claim")
    idle = _commands_during(2.5, db=10)
    # no wait (BLMOVE) and no claim (the script of thirteen keys and more): the lists are
    # watched; what remains is heartbeats, the sweep of expired claims (every second with
    # this timeout) and the revoked ids' poll
    assert not [c for c in idle if c.startswith(("BLMOVE", "RPOP"))], idle
    assert not [c for c in idle if " unacked unacked_index caraway.claims " in c], idle
    # once its first wait, which carried the last task's ack, is over: none (it was 5 here)
    assert len(_renewals(idle)) <= 1, idle
    result = tasks().slow.delay(2.0)
    wait_until(lambda: result.state == states.STARTED, timeout=10, message="the slow task")
    assert _renewals(_commands_during(1.2, db=10))  # its claim is renewed while it runs
    assert result.get(timeout=10) == 2.0


def _most_unacked(db: redis.Redis, done: Callable[[], int], count: int) -> int:
    """The most claims held at once until ``done()`` counts ``count`` tasks run."""
    most = 0
    deadline = time.monotonic() + 20
    while done() < count:
        assert time.monotonic() < deadline, f"{done()} of {count} tasks ran"
        most = max(most, db.hlen("unacked"))
        time.sleep(0.01)
    return most


@pytest.mark.parametrize(("task", "most"), [("nap", 2), ("hold", 1)])
def test_a_draining_child_claims_its_next_batch_as_its_last_task_starts_within_the_prefetch(
    project: Path,
    workers: list[Worker],
    db: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    task: str,
    most: int,
) -> None:
    # a child waited for its claim's round trip after every batch (40% of a drain's time):
    # the next claim now goes as the last task in hand starts. Celery's prefetch counts
    # what is held and not yet acked: a task acked as it starts (nap) leaves its room to
    # the next message, one acked after its run (hold, acks_late) does not
    monkeypatch.setenv("TEST_PREFETCH", "1")
    key = f"ran-{uuid.uuid4().hex}"
    for _ in range(4):
        getattr(tasks(), task).delay(key, 0.3)
    workers.append(Worker(project, "-P", "solo").wait_ready())
    done = (lambda: db.llen(key)) if task == "nap" else (lambda: db.scard(key))
    assert _most_unacked(db, done, 4) == most
