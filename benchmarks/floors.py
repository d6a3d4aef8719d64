"""The floors of issue #23's cost model, and each system's round trips and CPU per task.

    .venv/bin/python -m benchmarks.floors [--n 20000] [--systems] [--redis-url URL]

Runs against a private redis-server (started on a free port, no persistence, stopped by
pid) unless ``--redis-url`` names one. First the floors, with plain redis-py and nothing
else: one command per round trip (``LPUSH`` of a message, ``SET``), a message popped and
its result written with one round trip each, and the same batched (``LPUSH`` pipelined 100
at a time; ``RPOP key 100`` then the 100 result ``SET``s in one pipeline). Round trips are
not guessed: each figure is divided by Redis's own count of the reads it served
(``INFO stats`` ``total_reads_processed``: one per request or pipeline that arrives), next
to ``total_commands_processed``.

With ``--systems``, the same counters for caraway and Celery 5.7.0 (each from its own venv,
as ``python -m benchmarks`` runs them): the client's N ``add.delay(i, i)`` (round trips,
commands, and the client's CPU from ``time.process_time``), then a prefork -c 2 worker
draining those N (round trips and commands per task, CPU of the worker's process tree from
/proc and of Redis from ``INFO cpu``; the worker's start-up, measured alone on an empty
queue first, is subtracted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks import procs
from benchmarks.catalog import Options
from benchmarks.celery_env import caraway_python, celery_python
from benchmarks.systems import BrokerOps, Session, System

#: a message of the size of caraway's ``add(i, i)`` envelope on Redis, and a result document
MESSAGE = b"m" * 700
RESULT = b"r" * 160
BATCH = 100


@dataclass(frozen=True)
class Counters:
    """Redis's counters from one ``INFO all`` (one read, one command of its own)."""

    reads: int
    commands: int
    cpu: float
    exists: int

    def __sub__(self, other: Counters) -> Counters:
        # the earlier snapshot's INFO is one command and the later one's a read in between
        return Counters(
            self.reads - other.reads - 1,
            self.commands - other.commands - 1,
            self.cpu - other.cpu,
            self.exists - other.exists,
        )


def counters(client: redis.Redis) -> Counters:
    info = client.info("all")
    return Counters(
        int(info["total_reads_processed"]),
        int(info["total_commands_processed"]),
        float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        int(info.get("cmdstat_exists", {}).get("calls", 0)),
    )


def _measure(client: redis.Redis, n: int, body: Callable[[], None]) -> dict[str, float]:
    before = counters(client)
    started = time.perf_counter()
    body()
    elapsed = time.perf_counter() - started
    spent = counters(client) - before
    return {
        "rate": n / elapsed,
        "us_per_task": elapsed * 1e6 / n,
        "round_trips": spent.reads / n,
        "commands": spent.commands / n,
        "redis_cpu_us": spent.cpu * 1e6 / n,
    }


def _lpush_batched(client: redis.Redis, key: str, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush(key, MESSAGE)
        if len(pipe) == BATCH or i == n - 1:
            pipe.execute()


def _pop_and_store_batched(client: redis.Redis, key: str, n: int) -> None:
    done = 0
    pipe = client.pipeline(transaction=False)
    while done < n:
        popped: Any = client.rpop(key, min(BATCH, n - done))
        for offset in range(len(popped or [])):
            pipe.set(f"floor:result:{done + offset}", RESULT)
        pipe.execute()
        done += len(popped or [])


def floors(client: redis.Redis, n: int) -> dict[str, dict[str, float]]:
    key = "floor:queue"
    client.delete(key)

    def lpush_each() -> None:
        for _ in range(n):
            client.lpush(key, MESSAGE)

    def set_each() -> None:
        for i in range(n):
            client.set(f"floor:result:{i}", RESULT)

    def pop_and_store_each() -> None:
        for i in range(n):
            client.rpop(key)
            client.set(f"floor:result:{i}", RESULT)

    results = {"LPUSH, one round trip each": _measure(client, n, lpush_each)}
    results["SET, one round trip each"] = _measure(client, n, set_each)
    results["drain: RPOP + SET, one round trip each"] = _measure(client, n, pop_and_store_each)
    client.delete(key)
    results[f"enqueue batched: LPUSH pipelined {BATCH} a round trip"] = _measure(
        client, n, lambda: _lpush_batched(client, key, n)
    )
    results[f"drain batched: RPOP {BATCH} + {BATCH} SET in one pipeline"] = _measure(
        client, n, lambda: _pop_and_store_batched(client, key, n)
    )
    client.flushdb()
    return results


def system_costs(
    system: System, options: Options, ops: BrokerOps, client: redis.Redis
) -> dict[str, float]:
    """Client and worker round trips, commands and CPU per task for ``system`` on Redis."""
    n = options.n
    with Session(system, "redis", options, ops) as session:
        # the worker's start-up alone, on an empty queue: subtracted from the drain below
        before = counters(client)
        worker = session.start_worker()
        session.script("fleet_ping", 1, 120, 0, timeout=180)
        boot_cpu = procs.tree_cpu_seconds([worker.pid])
        session.stop_worker(worker)
        boot = counters(client) - before
        session.ops.call("clean")

        before = counters(client)
        sent = session.script("enqueue", n, timeout=120 + n * 0.05)
        enqueue = counters(client) - before
        session.ops.call("clean")

        ids = session.workdir / "ids.json"
        session.script("fill", n, ids, timeout=120 + n * 0.05)
        last = json.loads(ids.read_text())["ids"][-1]
        before = counters(client)
        worker = session.start_worker()
        while not client.exists(f"celery-task-meta-{last}"):
            time.sleep(0.05)
        time.sleep(1.0)  # the last prefetched batch
        worker_cpu = procs.tree_cpu_seconds([worker.pid]) - boot_cpu
        drain = counters(client) - before
    # boot: the ping script's own round trips are in it too, so the worker's start-up is
    # over-subtracted by a few: under 0.001 per task at n=20000
    worker_reads = drain.reads - boot.reads - drain.exists
    worker_commands = drain.commands - boot.commands - drain.exists
    return {
        # enqueue's 20 warm-up sends are counted by Redis too
        "client_round_trips": enqueue.reads / (n + ENQUEUE_WARMUP),
        "client_commands": enqueue.commands / (n + ENQUEUE_WARMUP),
        "client_cpu_us": float(sent.get("cpu_us", 0.0)),
        "client_rate": float(sent["rate"]),
        "worker_round_trips": worker_reads / n,
        "worker_commands": worker_commands / n,
        "worker_cpu_us": worker_cpu * 1e6 / n,
        "redis_cpu_us": (drain.cpu - boot.cpu) * 1e6 / n,
    }


#: enqueue's warm-up sends, counted by Redis but not by the script's N
ENQUEUE_WARMUP = 20


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[tuple[str, int, int]]:
    if url:
        client = redis.Redis.from_url(url)
        kwargs = client.connection_pool.connection_kwargs
        yield str(kwargs.get("host")), int(kwargs.get("port", 6379)), int(kwargs.get("db", 0))
        return
    with procs.private_redis() as port:
        yield "127.0.0.1", port, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--systems", action="store_true", help="also count caraway and Celery")
    parser.add_argument("--redis-url", help="an empty db to use instead of a private server")
    args = parser.parse_args()
    try:
        with _server(args.redis_url) as (host, port, db):
            client = redis.Redis(host=host, port=port, db=db)
            if client.dbsize():
                raise SystemExit(f"redis://{host}:{port}/{db} is not empty")
            print(f"floors, plain redis-py, n={args.n}, redis://{host}:{port}/{db}")
            print("| | tasks/s | us per task | round trips | commands | Redis CPU us |")
            print("|---|---:|---:|---:|---:|---:|")
            for name, row in floors(client, args.n).items():
                print(
                    f"| {name} | {row['rate']:,.0f} | {row['us_per_task']:.1f} | "
                    f"{row['round_trips']:.3f} | {row['commands']:.3f} | "
                    f"{row['redis_cpu_us']:.1f} |"
                )
            if not args.systems:
                return
            options = Options(
                brokers=("redis",),
                workloads=(),
                n=args.n,
                round_trips=0,
                chord_size=0,
                repeat=1,
                quick=False,
                redis_host=host,
                redis_port=port,
                redis_db=db,
            )
            ops = BrokerOps(celery_python(), options)
            ops.call("claim")
            print()
            print(f"per task on Redis, n={args.n} (client: add.delay; worker: prefork -c 2)")
            keys = (
                "client_round_trips",
                "client_commands",
                "client_cpu_us",
                "client_rate",
                "worker_round_trips",
                "worker_commands",
                "worker_cpu_us",
                "redis_cpu_us",
            )
            print("| system | " + " | ".join(keys) + " |")
            print("|---|" + "---:|" * len(keys))
            for system in (
                System("caraway", caraway_python()),
                System("celery", celery_python()),
            ):
                row = system_costs(system, options, ops, client)
                print(f"| {system.name} | " + " | ".join(f"{row[k]:.3g}" for k in keys) + " |")
            ops.call("release")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
