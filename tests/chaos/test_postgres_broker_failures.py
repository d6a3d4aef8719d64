"""The PostgreSQL broker through dropped connections: mid-run, every session of the
database is terminated by the server (what a restart or a failover does to clients); the
worker, the producer and the LISTEN connections reconnect by themselves and every
published task runs.

The machine's PostgreSQL is never restarted: a database of the test's own
(``caraway_ha_chaos_*``) has its sessions terminated with ``pg_terminate_backend``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import pg
from tests.chaos.ha_ledger import COUNT, RETRY_POLICY, Producer, ledger_project, report
from tests.chaos.ha_ledger import settle as settle_ledger
from tests.harness.redis import wait
from tests.helpers import Worker

pytestmark = pytest.mark.slow

APP = f"""
import os
from caraway import Caraway

url = os.environ['TEST_BROKER']
app = Caraway('proj', broker=url, backend='db+' + url, include=['proj.tasks'])
app.conf.update(result_expires=3600, task_publish_retry_policy={RETRY_POLICY})
"""


@pytest.fixture
def database() -> Iterator[str]:
    with pg.database("caraway_ha_chaos") as name:
        yield name


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str) -> Iterator[Path]:
    yield from ledger_project(tmp_path, monkeypatch, APP, pg.url(database))


def _terminate_sessions(dbname: str) -> int:
    with psycopg.connect(f"postgresql://{pg.PG_HOST}/postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


def test_every_task_runs_when_the_server_drops_every_session_mid_run(
    project: Path, database: str, tmp_path: Path
) -> None:
    worker = Worker(project, "-c", "2").wait_ready()
    try:
        from proj.tasks import add, ledger

        producer = Producer(ledger).start()
        wait(lambda: len(producer.sent) >= COUNT // 3, 120, "progress")
        assert _terminate_sessions(database) > 0
        wait(lambda: len(producer.sent) >= 2 * COUNT // 3, 120, "more progress")
        assert _terminate_sessions(database) > 0
        wait(producer.done.is_set, 300, "the producer to finish")
        runs = settle_ledger(tmp_path, producer.sent)
        assert add.delay(2, 3).get(timeout=20) == 5  # results and waits after it all
        survived = worker.process.poll() is None
    finally:
        worker.stop()
    figures = report("postgres sessions dropped", producer, runs, 2)
    assert survived, f"the worker must survive:\n{worker.log()[-3000:]}"
    assert not producer.failed, f"publishes that raised: {producer.failed[:10]}"
    # publishes commit synchronously: a dropped session loses none of them
    assert figures["lost"] == 0


def test_a_publish_whose_reply_was_lost_is_stored_once(database: str) -> None:
    """The connection drops after the INSERT committed but before its reply arrived (a cut
    connection; found by the delivery ledger): the client's retry must not store it twice."""
    import sqlalchemy as sa

    from caraway.brokers.registry import open_transport
    from tests.contract.conftest import make_message

    transport = open_transport(pg.url(database))
    lost: list[str] = []

    def drop_the_reply(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "INSERT INTO caraway_messages" in statement and not lost:
            lost.append(statement)  # committed (autocommit); the client never hears so
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    engine = transport.db.engine  # type: ignore[attr-defined]
    sa.event.listen(engine, "after_cursor_execute", drop_the_reply)
    try:
        transport.publish(make_message(1), queue="once")
        assert lost, "the reply was not dropped: the test proves nothing"
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM caraway_messages")).scalar()
        assert stored == 1
    finally:
        sa.event.remove(engine, "after_cursor_execute", drop_the_reply)
        transport.close()
