"""Broker housekeeping, run with Celery's interpreter (it has redis-py and py-amqp).

``probe`` reports server versions; ``claim`` refuses a Redis db holding keys the benchmark
did not write; ``clean`` empties that db (then re-marks it as ours) and deletes AMQP queues
and exchanges by name. A db is only ever flushed after ``claim`` found it empty or ours.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

import amqp  # type: ignore[import-untyped,unused-ignore]
import redis

from benchmarks.scripts._common import emit

MARKER = "caraway-bench:owner"


def _amqp_connection(url: str) -> amqp.Connection:
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    connection = amqp.Connection(
        host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=vhost,
        connect_timeout=3,
    )
    connection.connect()
    return connection


def probe(redis_url: str, amqp_url: str) -> None:
    versions: dict[str, str | None] = {"redis": None, "rabbitmq": None}
    with contextlib.suppress(redis.RedisError):
        versions["redis"] = str(redis.Redis.from_url(redis_url).info("server")["redis_version"])
    with contextlib.suppress(Exception):
        connection = _amqp_connection(amqp_url)
        raw = connection.server_properties.get("version")
        versions["rabbitmq"] = raw.decode() if isinstance(raw, bytes) else str(raw)
        connection.close()
    emit(**versions)


def claim(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    size = int(client.dbsize())
    if size and not client.exists(MARKER):
        sys.exit(
            f"Redis db {redis_url} holds {size} keys the benchmark did not write; "
            "choose a free db with --redis-db"
        )
    client.set(MARKER, "1")
    emit(claimed=redis_url)


def clean(redis_url: str, amqp_url: str | None, queues: Sequence[str]) -> None:
    client = redis.Redis.from_url(redis_url)
    if not client.exists(MARKER):
        sys.exit(f"refusing to flush {redis_url}: not claimed by the benchmark")
    client.flushdb()
    client.set(MARKER, "1")
    if amqp_url and queues:
        connection = _amqp_connection(amqp_url)
        try:
            for name in queues:
                channel = connection.channel()
                channel.queue_delete(name)
                channel.exchange_delete(name)
                channel.close()
        finally:
            connection.close()
    emit(cleaned=list(queues))


def pg_database(pg_url: str, database: str, *, create: bool) -> None:
    """Create (or drop, closing its sessions) one measurement's PostgreSQL database."""
    import psycopg

    if not database.startswith("caraway_ha_bench_"):
        sys.exit(f"refusing to touch database {database!r}: not one the benchmark names")
    with psycopg.connect(f"{pg_url.rstrip('/')}/postgres", autocommit=True) as conn:
        if create:
            conn.execute(f'CREATE DATABASE "{database}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    emit(database=database, created=create)


def info(redis_url: str, queues: Sequence[str]) -> None:
    """Redis's memory and command counters (W6, W8, W9 on the private server), and the
    length of each of ``queues``."""
    client = redis.Redis.from_url(redis_url)
    lengths = {name: int(client.llen(name)) for name in queues}
    stats = client.info("stats")
    memory = client.info("memory")
    commands = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in client.info("commandstats").items()
    }
    emit(
        used_memory=int(memory["used_memory"]),
        total_commands_processed=int(stats["total_commands_processed"]),
        total_reads_processed=int(stats.get("total_reads_processed", 0)),
        total_writes_processed=int(stats.get("total_writes_processed", 0)),
        commands=commands,
        lengths=lengths,
    )


def release(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    if client.exists(MARKER):
        client.flushdb()
    emit(released=redis_url)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="broker_ops")
    parser.add_argument(
        "command",
        choices=("probe", "claim", "clean", "release", "pg-create", "pg-drop", "info"),
    )
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--amqp-url")
    parser.add_argument("--pg-url")
    parser.add_argument("--database")
    parser.add_argument("--queue", action="append", default=[])
    args = parser.parse_args(argv)
    if args.command in ("pg-create", "pg-drop"):
        pg_database(args.pg_url, args.database, create=args.command == "pg-create")
    elif args.command == "probe":
        probe(args.redis_url, args.amqp_url or "")
    elif args.command == "claim":
        claim(args.redis_url)
    elif args.command == "info":
        info(args.redis_url, args.queue)
    elif args.command == "clean":
        clean(args.redis_url, args.amqp_url, args.queue)
    else:
        release(args.redis_url)


if __name__ == "__main__":
    main(sys.argv[1:])
