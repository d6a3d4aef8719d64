"""The SQL store's pure parts: Celery's database URLs, and documents <-> Celery's columns."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from caraway.brokers.postgres import rows
from caraway.brokers.registry import BACKEND_ALIASES, TRANSPORT_ALIASES, resolve
from caraway.clients.sql import dialect_name, engine_url
from caraway.exceptions import BackendError, ImproperlyConfigured
from caraway.protocol.results import encode_document, result_document


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("db+postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("db+postgresql+psycopg2://h/db", "postgresql+psycopg2://h/db"),
        ("postgres://h:5433/db", "postgresql+psycopg://h:5433/db"),
        (
            "postgresql://h/db?options=-csearch_path%3Dx",
            "postgresql+psycopg://h/db?options=-csearch_path%3Dx",
        ),
        ("db+sqlite:///results.db", "sqlite:///results.db"),
        ("db+mysql+pymysql://root@h/test", "mysql+pymysql://root@h/test"),
    ],
)
def test_celery_database_urls_become_sqlalchemy_urls(url: str, expected: str) -> None:
    assert engine_url(url) == expected


def test_a_dialect_the_store_is_not_written_for_is_refused_by_name() -> None:
    assert dialect_name("db+mariadb://h/db") == "mysql"
    with pytest.raises(ImproperlyConfigured, match="'oracle'"):
        dialect_name("db+oracle://h/db")


DATABASE_URLS = [
    "db+postgresql://h/d",
    "db+postgresql+psycopg://h/d",
    "db+sqlite:///x.db",
    "db+mysql+pymysql://h/d",
    "postgresql://h/d",
]


@pytest.mark.parametrize("url", DATABASE_URLS)
def test_every_spelling_of_a_database_url_finds_the_sql_store(url: str) -> None:
    cls = resolve(url, BACKEND_ALIASES, group="caraway.backends", kind="result backend")
    assert cls.__name__ == "SQLBackend"


def test_a_document_goes_to_celerys_columns_and_comes_back_equal() -> None:
    extended = {"name": "proj.add", "args": [1, 2], "kwargs": {"k": "v"}, "worker": "w@h",
                "retries": 1, "queue": "celery"}  # fmt: skip
    doc = result_document(
        "t1", "SUCCESS", {"n": 3}, children=[[["c1", None], None]], group_id="g1",
        parent_id="p1", extended=extended,
    )  # fmt: skip
    row = rows.task_row("t1", encode_document(doc))

    assert row["result"] == b'{"n":3}' and json.loads(row["args"]) == [1, 2]
    assert isinstance(row["date_done"], datetime) and row["date_done"].tzinfo is None
    assert json.loads(row["caraway_meta"]) == {"group_id": "g1", "parent_id": "p1"}
    back = json.loads(rows.document_from_row([row[column] for column in rows.TASK_COLUMNS]))
    assert back == json.loads(encode_document(doc))
    assert list(back) == list(doc)


def test_stamps_are_kept_in_celerys_stamps_column() -> None:
    doc = {"status": "SUCCESS", "result": 1, "stamped_headers": ["on"], "on": "yes"}
    row = rows.task_row("t1", json.dumps(doc).encode())

    assert json.loads(row["stamps"]) == {"stamped_headers": ["on"], "stamps": {"on": "yes"}}
    back = json.loads(rows.document_from_row([row[column] for column in rows.TASK_COLUMNS]))
    assert back["stamped_headers"] == ["on"] and back["on"] == "yes"


def test_a_result_celery_pickled_is_reported_not_unpickled() -> None:
    row = dict.fromkeys(rows.TASK_COLUMNS)
    row.update(task_id="t1", status="SUCCESS", result=b"\x80\x04K\x04.")
    with pytest.raises(BackendError, match="result_serializer='json'"):
        rows.document_from_row([row[column] for column in rows.TASK_COLUMNS])


def test_a_postgresql_broker_url_finds_the_postgres_transport() -> None:
    cls = resolve("postgres://h/d", TRANSPORT_ALIASES, group="caraway.transports", kind="t")
    assert cls.__name__ == "PostgresTransport"
