"""Failure paths on a private ``redis-server`` each test starts on a free port and stops by pid.

Whole-node kill -9 with acks_late, a Redis restart under load (``--appendonly yes``: only
a persistent Redis keeps queued messages across a restart), a parked countdown across a
worker restart, and bad input (corrupt body, unknown task, unaccepted content type).
Evidence is read from Redis itself: tasks SADD their id or value into a set.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from caraway import states
from caraway.exceptions import BrokerConnectionError, NotRegistered
from tests.harness.redis import Server as RedisServer
from tests.helpers import Worker, wait_until
from tests.integration.redisproj import redis_project, tasks

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ProjectFactory = Callable[..., Path]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    instance = RedisServer(tmp_path, "redis", appendonly=True).start()
    try:
        yield instance
    finally:
        instance.stop(signal.SIGKILL)


@pytest.fixture
def db(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url())
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: RedisServer
) -> Iterator[ProjectFactory]:
    """Writes `proj` on the private Redis, with the given transport options and env."""
    cleanups: list[Iterator[Path]] = []

    def factory(transport_options: dict[str, Any] | None = None, **env: str) -> Path:
        options = json.dumps(transport_options or {})
        gen = redis_project(
            tmp_path / "work", monkeypatch, server.url(), TEST_TRANSPORT_OPTIONS=options, **env
        )
        cleanups.append(gen)
        return next(gen)

    try:
        yield factory
    finally:
        for gen in cleanups:
            next(gen, None)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def _kill_node(worker: Worker) -> None:
    """kill -9 the worker's whole process group: parent and children die at once."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


def test_acks_late_task_of_a_killed_node_completes_on_a_new_worker(
    make_project: ProjectFactory, workers: list[Worker], db: redis.Redis
) -> None:
    project = make_project({"visibility_timeout": 2})
    first = Worker(project, "-c", "1", name="doomed").wait_ready()
    workers.append(first)
    result = tasks().hold.delay("held", 0.5)
    # kill while the task runs: its claim is in unacked, nobody left to renew or recover it
    wait_until(lambda: db.llen("held:started") == 1, timeout=10, message="task to start")
    _kill_node(first)
    assert db.hlen("unacked") == 1
    workers.append(Worker(project, "-c", "1", name="heir").wait_ready())
    assert result.get(timeout=20) == "held"
    assert db.smembers("held") == {result.id.encode()}
    assert db.llen("held:started") == 2  # ran again: at least once, never lost
    wait_until(lambda: db.hlen("unacked") == 0, timeout=5, message="unacked to drain")


def test_live_worker_keeps_a_task_longer_than_the_visibility_timeout(
    make_project: ProjectFactory, workers: list[Worker], db: redis.Redis
) -> None:
    project = make_project({"visibility_timeout": 1.5})
    workers.append(Worker(project, "-c", "2").wait_ready())
    result = tasks().hold.delay("long", 3.0)
    assert result.get(timeout=20) == "held"
    assert db.llen("long:started") == 1


def _publish_steadily(count: int, errors: list[BaseException]) -> None:
    try:
        add = tasks().mark_late
        for n in range(count):
            add.apply_async(("restart", n), ignore_result=True)
            time.sleep(0.005)
    except BaseException as exc:  # reported to the test thread
        errors.append(exc)


def test_every_task_completes_across_a_redis_restart_under_load(
    make_project: ProjectFactory, workers: list[Worker], server: RedisServer, db: redis.Redis
) -> None:
    # The producer (this process) retries long enough to ride out the outage; the workers
    # keep the default 3 retries, so their fetches fail and must reconnect by themselves.
    project = make_project({"visibility_timeout": 4, "max_retries": 10})
    worker_env = {"TEST_TRANSPORT_OPTIONS": json.dumps({"visibility_timeout": 4})}
    workers.append(Worker(project, "-c", "2", env=worker_env).wait_ready())
    total = 300
    errors: list[BaseException] = []
    producer = threading.Thread(target=_publish_steadily, args=(total, errors))
    producer.start()
    try:
        wait_until(lambda: db.scard("restart") >= 30, timeout=20, message="load to build")
        server.stop(signal.SIGKILL)  # appendfsync always: every acknowledged write is on disk
        time.sleep(1.5)  # the outage itself: long enough that the workers' retries give up
        server.start()
    finally:
        producer.join(timeout=60)
    assert not errors, errors
    check = redis.Redis.from_url(server.url())
    try:
        wait_until(lambda: check.scard("restart") == total, timeout=45, interval=0.2,
                   message=f"all {total} tasks to complete")  # fmt: skip
    finally:
        check.close()
    log = workers[0].log()
    # the outage was seen (by a child's fetch or the node's control channel), and survived
    assert "Connection refused" in log, "the outage reached the worker"
    assert workers[0].process.poll() is None, "the worker survived the restart"


def test_countdown_parked_beyond_the_horizon_survives_a_worker_restart_and_runs_once(
    make_project: ProjectFactory, workers: list[Worker], db: redis.Redis
) -> None:
    # a 1 s horizon and a 4 s countdown stand in for the default 60 s and a 2 hour delay
    project = make_project(TEST_PARK_HORIZON="1")
    first = Worker(project, "-c", "1", name="first").wait_ready()
    workers.append(first)
    sent = time.time()
    result = tasks().mark.apply_async(("parked", "once"), countdown=4)
    wait_until(lambda: db.zcard("caraway.schedule") == 1, timeout=5, message="parked")
    assert db.hlen("unacked") == 0 and db.llen("celery") == 0  # not held by the worker
    first.stop()
    workers.append(Worker(project, "-c", "1", name="second").wait_ready())
    assert result.get(timeout=15) == "once"
    assert time.time() - sent >= 3.9
    # a further sweep and poll cycle must not run it a second time
    time.sleep(1.5)
    assert db.lrange("parked:runs", 0, -1) == [b"once"]
    assert db.zcard("caraway.schedule") == 0 and db.hlen("unacked") == 0


def _envelope(task: str, body: bytes, content_type: str = "application/json") -> tuple[str, bytes]:
    """A kombu 5.7 Redis envelope (vectors/redis-delay.json), built by hand."""
    task_id = str(uuid.uuid4())
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {"lang": "py", "task": task, "id": task_id, "retries": 0,
                    "root_id": task_id, "parent_id": None, "eta": None, "expires": None,
                    "timelimit": [None, None], "argsrepr": "()", "kwargsrepr": "{}"},
        "properties": {"correlation_id": task_id, "reply_to": str(uuid.uuid4()),
                       "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": "celery"},
                       "delivery_tag": str(uuid.uuid4())},
    }  # fmt: skip
    return task_id, json.dumps(envelope).encode()


GOOD_BODY = b'[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def test_bad_messages_leave_the_worker_running_and_are_accounted_for(
    make_project: ProjectFactory, workers: list[Worker], db: redis.Redis
) -> None:
    project = make_project()
    worker = Worker(project, "-c", "1").wait_ready()
    workers.append(worker)
    corrupt_id, corrupt = _envelope("proj.tasks.add", b"[[1, 2], {}, {not json")
    unknown_id, unknown = _envelope("proj.tasks.no_such_task", GOOD_BODY)
    pickled_id, pickled = _envelope(
        "proj.tasks.add", b"\x80\x04K\x01.", "application/x-python-serialize"
    )
    db.lpush("celery", corrupt, unknown, pickled, b"{this is not an envelope")
    app = tasks().app
    missing = app.AsyncResult(unknown_id)
    with pytest.raises(NotRegistered, match="no_such_task"):
        missing.get(timeout=10)
    assert missing.state == states.FAILURE
    assert tasks().add.delay(2, 2).get(timeout=10) == 4  # still serving
    admin = app.admin()
    try:
        wait_until(lambda: len(admin.dead_letters()) == 4, timeout=10, message="4 letters")
        letters = admin.dead_letters()
    finally:
        admin.close()
    reasons = {letter.message.headers.get("id"): letter.reason for letter in letters}
    # None: the unparseable envelope; an unknown task is kept too (issue 15), not dropped
    assert set(reasons) == {corrupt_id, pickled_id, unknown_id, None}
    assert "NotRegistered" in reasons[unknown_id] and "no_such_task" in reasons[unknown_id]
    assert "refusing to deserialize content of type" in reasons[pickled_id]
    assert "not valid JSON" in reasons[corrupt_id]
    assert "envelope without a delivery_tag" in reasons[None]
    assert app.AsyncResult(corrupt_id).state == states.PENDING  # never run
    assert worker.process.poll() is None
    assert db.llen("celery") == 0 and db.hlen("unacked") == 0
    log = worker.log()
    assert corrupt_id in log and pickled_id in log and unknown_id in log
    assert "set aside unusable message(s)" in log


def test_producer_gives_up_on_a_stopped_redis_with_a_clear_error(
    make_project: ProjectFactory, server: RedisServer
) -> None:
    make_project({"max_retries": 2})
    add = tasks().add
    server.stop(signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(BrokerConnectionError, match=r"unreachable during publish after 3 attempts"):
        add.delay(1, 1)
    assert time.monotonic() - started < 5  # backs off, then gives up rather than hanging
