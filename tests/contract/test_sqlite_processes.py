"""The SQLite broker across real processes: one file, many producers and consumers, kills.

Children are started with the "spawn" context (a fresh interpreter, as safe as a worker's
own children) and are always killed and joined in ``finally``.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as stdlib_queue
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

import pytest

from caraway.brokers.contracts import Delivery
from caraway.brokers.sqlite.admin import SQLiteAdmin
from caraway.brokers.sqlite.transport import SQLiteTransport
from caraway.exceptions import BrokerError
from tests.contract.conftest import make_message

QUEUE = "celery"
PER_PRODUCER = 1000


def size(url: str, queue: str) -> int:
    admin = SQLiteAdmin(url)
    try:
        return admin.size(queue)
    finally:
        admin.close()


def _produce(url: str, producer: int) -> None:
    transport = SQLiteTransport(url)
    try:
        batch = []
        for index in range(PER_PRODUCER):
            message = make_message(index)
            message.headers["id"] = f"p{producer}-{index}"
            # half one by one, half in batches, so both paths are raced
            if index % 2:
                transport.publish(message, queue=QUEUE)
            else:
                batch.append((message, QUEUE))
            if len(batch) == 50:
                transport.publish_many(batch)
                batch = []
        transport.publish_many(batch)
    finally:
        transport.close()


def _consume(url: str, owner: str, seen: Any, stop: Any) -> None:
    transport = SQLiteTransport(url)
    try:
        while not stop.is_set():
            deliveries = transport.fetch([QUEUE], limit=16, timeout=0.2, owner=owner)
            transport.ack_many(deliveries)
            # reported after the ack: what the parent counts is consumed for good
            for delivery in deliveries:
                seen.put(delivery.message.headers["id"])
    finally:
        transport.close()


def _hold(url: str, owner: str, count: int, held: Any, visibility_timeout: float) -> None:
    transport = SQLiteTransport(url, options={"visibility_timeout": visibility_timeout})
    deliveries = transport.fetch([QUEUE], limit=count, timeout=5, owner=owner)
    held.put([delivery.message.headers["id"] for delivery in deliveries])
    time.sleep(60)  # killed long before this returns


@pytest.fixture
def ctx() -> SpawnContext:
    return multiprocessing.get_context("spawn")


@pytest.fixture
def processes() -> Iterator[list[SpawnProcess]]:
    """Every child a test starts; killed and joined whatever happens."""
    started: list[SpawnProcess] = []
    try:
        yield started
    finally:
        for process in started:
            if process.is_alive():
                process.kill()
            process.join(timeout=10)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.sqlite3'}"


def start(
    ctx: SpawnContext, processes: list[SpawnProcess], target: Any, *args: Any
) -> SpawnProcess:
    process = ctx.Process(target=target, args=args, daemon=True)
    process.start()
    processes.append(process)
    return process


def collect(source: Any, count: int, *, timeout: float) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            got.append(source.get(timeout=left))
        except stdlib_queue.Empty:
            break
    return got


@pytest.mark.slow
def test_two_producers_and_two_consumers_move_every_message_exactly_once(
    ctx: SpawnContext, processes: list[SpawnProcess], url: str
) -> None:
    assert size(url, QUEUE) == 0  # creates the file and schema, as an app would at start
    seen, stop = ctx.Queue(), ctx.Event()
    for owner in ("node/1", "node/2"):
        start(ctx, processes, _consume, url, owner, seen, stop)
    producers = [start(ctx, processes, _produce, url, producer) for producer in range(2)]

    got = collect(seen, 2 * PER_PRODUCER, timeout=60)
    stop.set()
    for producer in producers:
        producer.join(timeout=10)
        assert producer.exitcode == 0

    expected = {f"p{p}-{i}" for p in range(2) for i in range(PER_PRODUCER)}
    assert len(got) == len(expected), "a message was lost or consumed twice"
    assert set(got) == expected
    assert collect(seen, 1, timeout=0.5) == [], "a message was consumed twice"
    assert size(url, QUEUE) == 0
    transport = SQLiteTransport(url)
    assert transport.recover("node/1") + transport.recover("node/2") == 0
    transport.close()


@pytest.mark.slow
@pytest.mark.parametrize("comes_back_by", ["recover", "lease expiry"])
def test_claims_of_a_consumer_killed_with_sigkill_come_back(
    ctx: SpawnContext, processes: list[SpawnProcess], url: str, comes_back_by: str
) -> None:
    transport = SQLiteTransport(url, options={"visibility_timeout": 30})
    transport.publish_many([(make_message(index), QUEUE) for index in range(8)])
    held = ctx.Queue()
    lease = 30.0 if comes_back_by == "recover" else 1.0
    victim = start(ctx, processes, _hold, url, "node/doomed", 5, held, lease)
    (held_ids,) = collect(held, 1, timeout=30)
    assert len(held_ids) == 5

    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=10)
    assert victim.exitcode == -signal.SIGKILL

    if comes_back_by == "recover":
        assert transport.recover("node/doomed") == 5
    deliveries: list[Delivery] = []
    deadline = time.monotonic() + 10
    while len(deliveries) < 8 and time.monotonic() < deadline:
        deliveries += transport.fetch([QUEUE], limit=8, timeout=1, owner="node/heir")
    back = {d.message.headers["id"]: d for d in deliveries if d.message.headers["id"] in held_ids}
    assert sorted(back) == sorted(held_ids)
    assert all(d.redelivered and d.delivery_count == 2 for d in back.values())
    assert len(deliveries) == 8
    transport.close()


def test_a_transport_opened_before_fork_works_in_the_child(url: str) -> None:
    transport = SQLiteTransport(url)
    transport.publish(make_message(), queue=QUEUE)  # the parent's connection is open now
    pid = os.fork()
    if pid == 0:  # the child: exit code tells the parent how it went
        code = 1
        try:
            got = transport.fetch([QUEUE], limit=1, timeout=2, owner="child")
            transport.ack_many(got)
            transport.publish(make_message(1), queue="from-child")
            code = 0 if len(got) == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert size(url, QUEUE) == 0
    assert size(url, "from-child") == 1
    transport.close()


def test_publish_waits_out_a_writer_holding_the_lock_longer_than_busy_timeout(url: str) -> None:
    transport = SQLiteTransport(url, options={"busy_timeout": 0.05})
    transport.fetch([QUEUE], limit=1, timeout=0, owner="o")  # opens it, creates the schema
    blocker = sqlite3.connect(
        url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        transport.publish(make_message(), queue=QUEUE)
        waited = time.monotonic() - started
    finally:
        release.cancel()
        release.join()
        blocker.close()

    assert waited >= 0.4
    assert size(url, QUEUE) == 1
    transport.close()


def test_an_unwritable_path_is_reported_as_a_broker_error(tmp_path: Path) -> None:
    transport = SQLiteTransport(f"sqlite:///{tmp_path / 'missing-dir' / 'x.sqlite3'}")

    with pytest.raises(BrokerError, match="missing-dir"):
        transport.fetch([QUEUE], limit=1, timeout=0, owner="o")


def test_the_file_is_in_wal_mode(url: str) -> None:
    transport = SQLiteTransport(url)
    transport.fetch([QUEUE], limit=1, timeout=0, owner="o")  # opened lazily, on first use
    transport.close()
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
