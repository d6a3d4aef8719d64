"""``caraway migrate`` on PostgreSQL: a fresh database, and tables Celery 5.7 created itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from caraway.cli.main import cli
from tests import pg

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def schema(pg_database: str) -> Iterator[tuple[str, str]]:
    with pg.schema(pg_database) as name:
        yield (
            pg.url(pg_database, schema=name),
            pg.url(pg_database, scheme="db+postgresql", schema=name),
        )


def _migrate(broker: str, results: str, *args: str) -> str:
    outcome = CliRunner().invoke(cli, ["-b", broker, "--result-backend", results, "migrate", *args])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


def test_migrate_creates_every_table_once_then_finds_them_up_to_date(
    schema: tuple[str, str],
) -> None:
    broker, results = schema

    first = _migrate(broker, results)
    assert "created table caraway_messages" in first
    assert "created table celery_taskmeta" in first and "NOTIFY trigger" in first
    second = _migrate(broker, results)
    assert second.count("up to date") == 2


def test_migrate_upgrades_the_tables_celery_created_and_celery_still_reads_them(
    schema: tuple[str, str],
) -> None:
    import celery

    broker, results = schema
    app = celery.Celery("old", broker="memory://", backend=results)
    try:
        app.backend.store_result("kept", 7, "SUCCESS")  # Celery creates its tables here
        output = _migrate(broker, results, "--no-broker")
        assert "added column celery_taskmeta.caraway_expires" in output
        assert "added column celery_taskmeta.caraway_meta" in output
        assert app.AsyncResult("kept").get(timeout=5) == 7
    finally:
        app.close()
    engine = sa.create_engine(results.replace("db+postgresql", "postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            names = {column["name"] for column in sa.inspect(conn).get_columns("celery_taskmeta")}
    finally:
        engine.dispose()
    assert {"task_id", "status", "result", "caraway_expires", "caraway_meta"} <= names


def test_migrate_sql_prints_the_statements_without_running_them(schema: tuple[str, str]) -> None:
    broker, results = schema

    output = _migrate(broker, results, "--sql")

    assert "CREATE TABLE IF NOT EXISTS caraway_messages" in output
    assert "CREATE TABLE celery_taskmeta" in output
    assert "CREATE TRIGGER" in output
    assert "created table" not in _migrate(broker, results, "--sql")
