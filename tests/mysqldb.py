"""MariaDB/MySQL for tests: a database of their own on the machine's server (127.0.0.1:3306,
root without a password), named ``caraway_ha_*`` and dropped by the fixture that made it.
Skips locally without a server or pymysql; fails in CI."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

HOST = os.environ.get("CARAWAY_TEST_MYSQL", "root@127.0.0.1:3306")


def _connect() -> Any:
    try:
        import pymysql
    except ImportError as exc:
        _unavailable(f"pymysql is not installed: {exc}")
    user, _, address = HOST.partition("@")
    host, _, port = address.partition(":")
    try:
        return pymysql.connect(host=host, port=int(port or 3306), user=user, autocommit=True)
    except pymysql.err.OperationalError as exc:
        _unavailable(f"no MySQL/MariaDB at {HOST}: {exc}")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"MariaDB must answer in CI: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh database's ``db+mysql+pymysql://`` URL; dropped afterwards."""
    name = f"caraway_ha_{uuid.uuid4().hex[:10]}"
    conn = _connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
        yield f"db+mysql+pymysql://{HOST}/{name}"
    finally:
        from caraway.clients import sql

        sql.dispose_engines()
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
