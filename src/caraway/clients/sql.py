"""The SQL client of the PostgreSQL broker and the SQL result store: Celery's database URLs ->
one SQLAlchemy engine per process and database, transactions with retries.

URLs: Celery's ``db+<SQLAlchemy URL>`` (``db+postgresql://``, ``db+sqlite:///path``,
``db+mysql://``) and the broker's plain ``postgresql://`` / ``postgres://``; a PostgreSQL URL
that names no driver gets psycopg 3. The one thing to know: engines are per process: a
fork builds its own and never touches the pooled connections it inherited (they belong to
the parent's sessions), so one :class:`SQLDatabase` may be created before a worker forks.
Waiting on PostgreSQL notifications lives beside this, in ``clients/sql_listen.py``.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from caraway.clients.urls import mask_url
from caraway.exceptions import ImproperlyConfigured

T = TypeVar("T")
logger = logging.getLogger("caraway.clients.sql")

#: the dialects whose upserts and locks the SQL plug-ins are written for
DIALECTS = ("postgresql", "sqlite", "mysql")
#: engine keyword arguments taken over from the options (Celery's database_engine_options)
_ENGINE_OPTIONS = (
    "pool_size",
    "max_overflow",
    "pool_recycle",
    "pool_pre_ping",
    "pool_timeout",
    "echo",
    "connect_args",
)
#: first pause between two attempts; doubled up to _MAX_PAUSE
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 1.0


def engine_url(url: str) -> str:
    """The SQLAlchemy URL a caraway/Celery database URL stands for.

    ``db+`` is Celery's prefix for "a SQLAlchemy URL follows"; ``postgres://`` is Heroku's
    spelling of ``postgresql://``; a PostgreSQL URL without a driver gets psycopg 3, which
    the notifications need (SQLAlchemy's own default would be psycopg2).
    """
    rest = url[3:] if url.startswith("db+") else url
    scheme, sep, tail = rest.partition("://")
    if not sep:
        raise ImproperlyConfigured(
            f"{mask_url(url)!r} is not a database URL; write it like "
            "'db+postgresql://user:password@host/dbname' or 'db+sqlite:///results.db'"
        )
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+psycopg"
    elif scheme.startswith("postgres+"):
        scheme = "postgresql" + scheme[len("postgres") :]
    return f"{scheme}://{tail}"


def dialect_name(url: str) -> str:
    """``postgresql``, ``sqlite`` or ``mysql`` for ``url``; ImproperlyConfigured for others."""
    scheme = engine_url(url).partition("://")[0]
    name = scheme.partition("+")[0]
    if name == "mariadb":
        name = "mysql"
    if name not in DIALECTS:
        raise ImproperlyConfigured(
            f"{mask_url(url)!r}: caraway's SQL store runs on PostgreSQL, SQLite and MySQL/"
            f"MariaDB, not {name!r}; use one of db+postgresql://, db+sqlite://, db+mysql://"
        )
    return name


class _Engines:
    """This process's engines, one per (URL, options): every plug-in on one database shares
    one pool."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # after fork(): a lock copied while held would stay held in the child, and the
        # parent's engines hold the parent's sessions; keep them referenced so no driver
        # finaliser closes a socket the parent still uses
        _ABANDONED.extend(getattr(self, "by_key", {}).values())
        self.lock = threading.Lock()
        self.by_key: dict[tuple[str, str], Engine] = {}

    def get(self, url: str, options: dict[str, Any]) -> Engine:
        key = (url, repr(sorted(options.items())))
        with self.lock:
            engine = self.by_key.get(key)
            if engine is None:
                engine = self.by_key[key] = _create_engine(url, options)
            return engine

    def dispose(self) -> None:
        with self.lock:
            engines, self.by_key = list(self.by_key.values()), {}
        for engine in engines:
            engine.dispose()


_ABANDONED: list[Engine] = []
_ENGINES = _Engines()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ENGINES.reset)


def _create_engine(url: str, options: dict[str, Any]) -> Engine:
    target = engine_url(url)
    kwargs = {key: options[key] for key in _ENGINE_OPTIONS if key in options}
    kwargs.setdefault("pool_recycle", 3600)  # Celery's database_engine_options default
    if target.startswith(("mysql", "mariadb")):
        # rowcount must count changed rows (an upsert that refused to write: 0), not the
        # rows matched, which SQLAlchemy asks the MySQL drivers for (CLIENT_FOUND_ROWS)
        kwargs["connect_args"] = {"client_flag": 0, **dict(kwargs.get("connect_args") or {})}
    try:
        engine = sa.create_engine(target, **kwargs)
    except ModuleNotFoundError as exc:
        raise ImproperlyConfigured(
            f"{mask_url(url)!r} needs the database driver {exc.name!r}, which is not "
            f"installed; run: pip install 'caraway[{_extra(target)}]'"
        ) from exc
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"cannot use {mask_url(url)!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine, float(options.get("busy_timeout", 5.0)))
    if engine.dialect.name == "postgresql" and options.get("synchronous_commit") is not None:
        _synchronous_commit(engine, str(options["synchronous_commit"]))
    callback = options.get("engine_callback")
    if callback is not None:
        _callable(callback)(engine)
    return engine


def _callable(target: Any) -> Callable[[Engine], Any]:
    """Celery's ``database_engine_callback``: a callable, or its ``module:name`` path."""
    if callable(target):
        return cast(Callable[[Engine], Any], target)
    module_name, sep, attr = str(target).replace(":", ".").rpartition(".")
    if not sep:
        raise ImproperlyConfigured(f"database_engine_callback {target!r} is not 'module:name'")
    found = getattr(importlib.import_module(module_name), attr, None)
    if not callable(found):
        raise ImproperlyConfigured(f"database_engine_callback {target!r} is not callable")
    return cast(Callable[[Engine], Any], found)


def _extra(target: str) -> str:
    if target.startswith("postgresql"):
        return "postgres"
    return "sql"


def _sqlite_setup(engine: Engine, busy_timeout: float) -> None:
    """WAL, a busy timeout and BEGIN IMMEDIATE: SQLAlchemy's recipe for SQLite writers.

    pysqlite begins a transaction lazily and as DEFERRED, so two writers that both read
    first would deadlock on the upgrade; taking the write lock at BEGIN serialises them.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _synchronous_commit(engine: Engine, value: str) -> None:
    """Every connection of ``engine`` commits with PostgreSQL's ``synchronous_commit`` at
    ``value``: ``off`` returns before the commit's WAL is on disk (a server crash may undo
    the last few hundred milliseconds of commits, in order; nothing is left half done)."""
    if value not in ("on", "off", "local", "remote_write", "remote_apply"):
        raise ImproperlyConfigured(f"synchronous_commit {value!r} is not a PostgreSQL value")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True  # a session setting, outside any transaction
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET synchronous_commit TO {value}")
        cursor.close()
        dbapi_connection.autocommit = autocommit


def _retryable(exc: DBAPIError) -> bool:
    """A dropped connection, a deadlock, a serialisation failure, a busy SQLite file."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


def _is_disconnect(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    # errors raised before a session exists carry no SQLSTATE (psycopg) or say so
    text = str(exc.orig).lower()
    return "connection" in text and ("refused" in text or "failed" in text or "closed" in text)


class SQLDatabase:
    """One process's handle on one database: an engine shared by every handle on the same
    URL in this process, transactions retried when the connection dropped or a deadlock
    or busy file got in the way.

    ``error`` is what failures are raised as; ``connection_error`` when the database stays
    unreachable after ``max_retries`` (default 3) retries. Options: Celery's
    ``database_engine_options`` keys (``pool_size``, ``pool_recycle``...), ``busy_timeout``
    (SQLite, seconds).
    """

    def __init__(
        self,
        url: str,
        *,
        error: type[Exception],
        connection_error: type[Exception] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.dialect = dialect_name(url)
        self.error = error
        self.connection_error = connection_error or error
        self.options = dict(options or {})
        self.max_retries = int(self.options.get("max_retries", 3) or 0)
        self._engine_options = {
            key: value
            for key, value in self.options.items()
            if key in _ENGINE_OPTIONS
            or key in ("busy_timeout", "engine_callback", "synchronous_commit")
        }
        self._prepared: set[tuple[int, str]] = set()
        self._prepare_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """This process's engine for the URL (built on first use, again after a fork)."""
        try:
            return _ENGINES.get(self.url, self._engine_options)
        except ImproperlyConfigured:
            raise
        except Exception as exc:
            raise self.error(f"cannot open {mask_url(self.url)!r}: {exc}") from exc

    def transaction(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction, committed when it returns.

        Retried from the start on a dropped connection, a deadlock or a busy file, so
        ``work`` must only touch the database.
        """
        return self._retry(lambda: self._in_transaction(work))

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return work(conn)

    def autocommit(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` with each statement committed on its own: one round trip a statement.

        For statements that are atomic alone (PostgreSQL's data-modifying CTEs); retried as
        :meth:`transaction`, so a statement may run twice after a lost reply.
        """
        return self._retry(lambda: self._autocommitted(work))

    def _autocommitted(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return work(conn.execution_options(isolation_level="AUTOCOMMIT"))

    def prepare(self, name: str, setup: Callable[[Connection], None]) -> None:
        """Run ``setup`` (creating tables) once per process; idempotent ``setup`` only."""
        key = (os.getpid(), name)
        if key in self._prepared:
            return
        with self._prepare_lock:
            if key not in self._prepared:
                self.transaction(setup)
                self._prepared.add(key)

    def _retry(self, attempt: Callable[[], T]) -> T:
        pause = _FIRST_PAUSE
        for retry in range(self.max_retries + 1):
            try:
                return attempt()
            except DBAPIError as exc:
                if not _retryable(exc) or retry >= self.max_retries:
                    raise self._failure(exc) from exc
                logger.debug("retrying after %s", exc)
            except SQLAlchemyError as exc:
                raise self.error(f"{mask_url(self.url)}: {exc}") from exc
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(self, exc: DBAPIError) -> Exception:
        text = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else str(exc)
        if _is_disconnect(exc):
            return self.connection_error(
                f"cannot reach the database at {mask_url(self.url)!r} "
                f"(after {self.max_retries} retries): {text}"
            )
        return self.error(f"{mask_url(self.url)}: {text}")

    def close(self) -> None:
        """Nothing to release per handle: the engine is shared by the process."""


def dispose_engines() -> None:
    """Close every pooled connection of this process (tests, shutdown)."""
    _ENGINES.dispose()


def chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """``items`` in slices small enough for one statement's bound parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
