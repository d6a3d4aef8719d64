"""PostgreSQL for tests: databases and schemas of their own on the machine's server.

Every database made here is named ``caraway_ha_*`` and dropped by the fixture that made it;
a schema per test (``?options=-csearch_path=...``) keeps tests apart inside one database
without the cost of CREATE DATABASE. Skips locally without a server; fails in CI.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

PG_HOST = os.environ.get("CARAWAY_TEST_PG", "postgres@127.0.0.1:5432")


def _admin_connection(dbname: str = "postgres"):  # type: ignore[no-untyped-def]
    try:
        import psycopg
    except ImportError as exc:
        _unavailable(f"psycopg is not installed: {exc}")
    try:
        return psycopg.connect(
            f"postgresql://{PG_HOST}/{dbname}", autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError as exc:
        _unavailable(f"no PostgreSQL at {PG_HOST}: {exc}")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL must answer in CI: {reason}")
    pytest.skip(reason)


def create_database(prefix: str = "caraway_ha") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database(prefix: str = "caraway_ha") -> Iterator[str]:
    """A fresh database's name; dropped afterwards (its connections forced closed)."""
    name = create_database(prefix)
    try:
        yield name
    finally:
        release_connections()
        drop_database(name)


def url(dbname: str, *, scheme: str = "postgresql", schema: str | None = None) -> str:
    base = f"{scheme}://{PG_HOST}/{dbname}"
    if schema:
        base += f"?options=-csearch_path%3D{schema}"
    return base


@contextlib.contextmanager
def schema(dbname: str) -> Iterator[str]:
    """A fresh schema in ``dbname``, dropped with everything in it afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin_connection(dbname) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        release_connections()
        with _admin_connection(dbname) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def release_connections() -> None:
    """Close this process's pooled connections and LISTEN threads (between tests)."""
    from caraway.clients import sql, sql_listen

    sql_listen.stop_listeners()
    sql.dispose_engines()
