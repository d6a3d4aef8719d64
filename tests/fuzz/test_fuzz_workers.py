"""Malformed messages straight onto each broker's queue, among well-formed tasks, against a
real worker (issue 15): the same processes stay alive, every malformed message lands in the
dead-letter store with a reason, every well-formed task succeeds, nothing logs a secret.

Hypothesis draws the cases, derandomized (the same cases on every run). CI runs the short
variant, one pool per broker; ``-m fuzz_long`` runs every pool on every broker with ten
times the cases (docs/security.md).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from caraway.brokers.registry import open_mailbox
from caraway.protocol.message import Message
from tests.fuzz.cases import Case, malformed, redis_envelopes
from tests.fuzz.publishers import AMQPPublisher, RedisPublisher, SQLitePublisher, field_table
from tests.helpers import Worker, wait_until

REDIS_URL = "redis://127.0.0.1:6379/14"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: malformed messages per batch; one well-formed task follows each batch
BATCH = 20


@dataclass(frozen=True)
class Run:
    broker: str
    pool: str
    batches: int


SHORT = [Run("sqlite", "prefork", 100), Run("redis", "threads", 100), Run("amqp", "solo", 60)]
LONG = [
    Run(b, p, 1000) for b in ("sqlite", "redis", "amqp") for p in ("prefork", "threads", "solo")
]


def _env(broker: str) -> dict[str, str]:
    if broker == "sqlite":
        return {}
    if broker == "redis":
        return {"TEST_BROKER": REDIS_URL, "TEST_BACKEND": REDIS_URL}
    return {"TEST_BROKER": AMQP_URL, "TEST_BACKEND": "redis://127.0.0.1:6379/15"}


def _publisher(broker: str, project: Path) -> Any:
    if broker == "sqlite":
        # the embedded default: the file beside the module that made the app
        return SQLitePublisher(_app().broker_url.removeprefix("sqlite://"))
    if broker == "redis":
        return RedisPublisher(REDIS_URL)
    return AMQPPublisher()


def _cases(broker: str) -> st.SearchStrategy[Case]:
    if broker == "redis":
        return st.one_of(malformed(), malformed(), redis_envelopes())
    return malformed(structural=broker != "amqp")


def _app() -> Any:
    from proj.caraway import app

    return app


def _dead_letters(queue: str) -> list[str]:
    admin = _app().admin()
    try:
        return [d.reason for d in admin.dead_letters(limit=100_000) if d.queue == queue]
    finally:
        admin.close()


def _purge_dead_letters(queue: str) -> None:
    admin = _app().admin()
    try:
        ids = [d.id for d in admin.dead_letters(limit=100_000) if d.queue == queue]
        if ids:
            admin.purge_dead_letters(ids)
    finally:
        admin.close()


def _fuzz(run: Run, project: Path, workers: list[Worker], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _env(run.broker).items():
        monkeypatch.setenv(name, value)  # this process's app too
    if run.broker != "sqlite":
        redis.Redis.from_url(REDIS_URL).flushdb()
    queue = f"fuzz-{uuid.uuid4().hex[:8]}"
    concurrency = "1" if run.pool != "threads" else "2"
    worker = Worker(
        project, "-P", run.pool, "-c", concurrency, "-Q", queue, "-l", "debug", env=_env(run.broker)
    ).wait_ready()
    workers.append(worker)
    pid, children = worker.process.pid, sorted(worker.children())
    from proj.tasks import add

    publisher = _publisher(run.broker, project)
    sent: list[int] = []
    control_sent: list[int] = []

    @settings(
        max_examples=run.batches,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        # no shrinking: a real worker's state carries over from one example to the next,
        # so a failing batch is reported as drawn (its mutations name what it did)
        phases=[Phase.explicit, Phase.generate],
    )
    @given(batch=st.lists(_cases(run.broker), min_size=BATCH, max_size=BATCH))
    def one_batch(batch: list[Case]) -> None:
        publisher.publish(batch, queue)
        number = len(sent)
        sent.append(len(batch))
        assert add.apply_async((number, 1), queue=queue).get(timeout=30) == number + 1
        if number % 10 == 0:
            control_sent.append(_fuzz_control_channel(batch))

    try:
        try:
            one_batch()
        except BaseException:
            print("worker log, last lines:\n", worker.log()[-6000:])
            raise
        expected = sum(sent)
        reasons = wait_until(
            lambda: (found := _dead_letters(queue)) and len(found) >= expected and found,
            timeout=60,
            message=f"{expected} dead letters on {queue}",
        )
        # remote control still answers after the garbage on its channel
        replies = _app().control.ping(destination=[f"w1@{os.uname().nodename}"], timeout=5)
    finally:
        publisher.close()
    log = worker.log()
    assert worker.process.poll() is None, log[-3000:]
    assert worker.process.pid == pid
    assert sorted(worker.children()) == children, "a child died and was replaced"
    assert len(reasons) == expected, f"{len(reasons)} dead letters for {expected} sent"
    assert all(reasons), "a dead letter without a reason"
    assert replies, "remote control stopped answering"
    assert "internal error" not in log, log[log.index("internal error") - 200 :][:3000]
    assert ":guest@" not in log
    print(
        f"{run.broker}/{run.pool}: {expected} malformed task messages in {len(sent)} batches, "
        f"{sum(control_sent)} control messages, {len(sent)} well-formed tasks"
    )
    _purge_dead_letters(queue)


def _fuzz_control_channel(batch: list[Case]) -> int:
    """The same garbage broadcast on the remote-control channel."""
    app = _app()
    mailbox = open_mailbox(app.broker_url, dict(app.conf.broker_transport_options))
    try:
        for case in batch:
            mailbox.publish(_as_message(case))
    finally:
        mailbox.close()
    return len(batch)


def _as_message(case: Case) -> Message:
    return Message(
        body=case.body,
        # what every broker's field tables carry (AMQP: no integers beyond 64 bits)
        headers=field_table(
            case.headers if isinstance(case.headers, dict) else {"x": case.headers}
        ),
        content_type=case.content_type if isinstance(case.content_type, str) else "text/plain",
        content_encoding=case.content_encoding if isinstance(case.content_encoding, str) else "",
    )


def _ids(runs: list[Run]) -> Callable[[Run], str]:
    return lambda run: f"{run.broker}-{run.pool}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("run", SHORT, ids=_ids(SHORT))
def test_malformed_messages_never_kill_a_worker_nor_lose_a_task(
    run: Run, project: Path, workers: list[Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fuzz(run, project, workers, monkeypatch)


@pytest.mark.fuzz_long
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("run", LONG, ids=_ids(LONG))
def test_malformed_messages_never_kill_a_worker_nor_lose_a_task_long(
    run: Run, project: Path, workers: list[Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fuzz(run, project, workers, monkeypatch)
