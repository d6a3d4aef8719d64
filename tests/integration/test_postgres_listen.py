"""PostgreSQL notifications survive their connection: when the server drops the LISTEN
connection, waiters are woken to look again and the listener reconnects, so a result stored
afterwards still wakes its waiter at once (no polling fallback needed)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from caraway.brokers.registry import open_backend, open_transport
from caraway.protocol.message import Message
from tests import pg
from tests.helpers import wait_until


@pytest.fixture
def urls(pg_database: str) -> Iterator[tuple[str, str]]:
    with pg.schema(pg_database) as schema:
        yield (
            pg.url(pg_database, schema=schema),
            pg.url(pg_database, scheme="db+postgresql", schema=schema),
        )


def _terminate_listeners(dbname: str) -> int:
    with psycopg.connect(f"postgresql://{pg.PG_HOST}/{dbname}", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


def _listening(dbname: str) -> bool:
    with psycopg.connect(f"postgresql://{pg.PG_HOST}/{dbname}", autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN%%'",
            (dbname,),
        ).fetchone()
    return bool(row and row[0])


def test_a_result_waiter_wakes_after_the_listen_connection_was_dropped(
    urls: tuple[str, str], pg_database: str
) -> None:
    _, results = urls
    waiter, writer = open_backend(results), open_backend(results)
    task_id = str(uuid.uuid4())
    got: list[bytes | None] = []
    try:
        first = threading.Thread(
            target=lambda: got.append(waiter.wait(task_id, until=lambda d: True, timeout=0.5))
        )
        first.start()
        first.join()  # the listener is up and listening now
        assert wait_until(lambda: _terminate_listeners(pg_database), timeout=5)

        thread = threading.Thread(
            target=lambda: got.append(waiter.wait(task_id, until=lambda d: True, timeout=10))
        )
        thread.start()
        wait_until(lambda: _listening(pg_database), timeout=5, message="the listener back")
        started = time.monotonic()
        document = b'{"status": "SUCCESS", "result": 1}'
        writer.store(task_id, document, state="SUCCESS", expires=60)
        thread.join(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        waiter.close()
        writer.close()
    assert got[0] is None and got[1] is not None
    assert elapsed < 1.0, "woken by the notification, not the 5 s recheck"


def test_a_waiting_consumer_wakes_for_a_publish_after_the_listen_connection_was_dropped(
    urls: tuple[str, str], pg_database: str
) -> None:
    broker, _ = urls
    consumer, producer = open_transport(broker), open_transport(broker)
    queue = f"listen-{uuid.uuid4().hex[:8]}"
    try:
        assert consumer.fetch([queue], limit=1, timeout=0.3, owner="o") == []
        assert wait_until(lambda: _terminate_listeners(pg_database), timeout=5)
        found: list[int] = []
        thread = threading.Thread(
            target=lambda: found.append(
                len(consumer.fetch([queue], limit=1, timeout=10, owner="o"))
            )
        )
        thread.start()
        wait_until(lambda: _listening(pg_database), timeout=5, message="the listener back")
        started = time.monotonic()
        producer.publish(Message(body=b"[[], {}, {}]", headers={"id": "x"}), queue=queue)
        thread.join(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
        producer.close()
    assert found == [1]
    assert elapsed < 1.0
