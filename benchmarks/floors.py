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
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from benchmarks import procs
from benchmarks.catalog import Options
from benchmarks.celery_env import caraway_python, celery_python
from benchmarks.systems import REPO, BrokerOps, Session, System

#: a message of the size of caraway's ``add(i, i)`` envelope on Redis, and a result document
MESSAGE = b"m" * 700
RESULT = b"r" * 160
BATCH = 100
RESULTS = REPO / "benchmarks" / "results"


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
    system: System, broker: str, options: Options, ops: BrokerOps, client: redis.Redis
) -> dict[str, float]:
    """Client and worker costs per task for ``system`` on ``broker``: CPU always, socket
    sends (strace) when strace is installed, Redis's own counts on Redis."""
    n = options.n
    on_redis = broker == "redis"
    figures: dict[str, float] = {}
    with Session(system, broker, options, ops) as session:
        before = counters(client)
        sent = session.script("enqueue", n, timeout=300 + n * 0.2)
        enqueue = counters(client) - before
        figures["client_cpu_us"] = float(sent.get("cpu_us", 0.0))
        figures["client_rate"] = float(sent["rate"])
        if on_redis:
            # enqueue's 20 warm-up sends are counted by Redis too
            figures["client_round_trips"] = enqueue.reads / (n + ENQUEUE_WARMUP)
            figures["client_commands"] = enqueue.commands / (n + ENQUEUE_WARMUP)
        # again under strace, for the counts only (tracing slows the client down)
        trace = session.workdir / "strace.txt"
        prefix = _strace(trace)
        if prefix:
            traced = max(100, n // 4)
            session.script("enqueue", traced, timeout=300 + traced, prefix=prefix)
            for name, calls in _syscalls(trace).items():
                figures[f"client_{name}"] = calls / (traced + ENQUEUE_WARMUP)
    # a new session: SQLite's file and PostgreSQL's database start empty again
    with Session(system, broker, options, ops) as session:
        # the worker's start-up (and one round trip): subtracted from the drain below
        before = counters(client)
        worker = session.start_worker()
        session.script("roundtrip", 1, timeout=300)
        boot_cpu = procs.tree_cpu_seconds([worker.pid])
        session.stop_worker(worker)
        boot = counters(client) - before

        ids = session.workdir / "ids.json"
        session.script("fill", n, ids, timeout=300 + n * 0.05)
        before = counters(client)
        worker = session.start_worker()
        if on_redis:
            last = json.loads(ids.read_text())["ids"][-1]
            while not client.exists(f"celery-task-meta-{last}"):
                time.sleep(0.05)
            time.sleep(1.0)  # the last prefetched batch
        else:
            session.script("drain_wait", ids, 600 + n * 0.1, timeout=900 + n * 0.1)
        figures["worker_cpu_us"] = (procs.tree_cpu_seconds([worker.pid]) - boot_cpu) * 1e6 / n
        drain = counters(client) - before
    if on_redis:
        # boot holds the round-trip script's few requests too: under 0.001 per task
        figures["worker_round_trips"] = (drain.reads - boot.reads - drain.exists) / n
        figures["worker_commands"] = (drain.commands - boot.commands - drain.exists) / n
        figures["redis_cpu_us"] = (drain.cpu - boot.cpu) * 1e6 / n
    return figures


#: enqueue's warm-up sends, counted by Redis but not by the script's N
ENQUEUE_WARMUP = 20
#: the system calls counted on the client: socket sends, file writes and syncs (SQLite)
SYSCALLS = ("sendto", "sendmsg", "write", "pwrite64", "fdatasync", "fsync")


def _strace(output: Path) -> list[str]:
    """strace counting SYSCALLS into ``output`` (nothing when strace is not installed)."""
    if shutil.which("strace") is None:
        return []
    return ["strace", "-f", "-c", "-o", str(output), "-e", "trace=" + ",".join(SYSCALLS)]


def _syscalls(summary: Path) -> dict[str, int]:
    """Calls per system call from ``strace -c``'s table."""
    counts = dict.fromkeys(SYSCALLS, 0)
    for line in summary.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in counts and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    return counts


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
    parser.add_argument(
        "--broker",
        default="redis",
        help="comma-separated brokers for --systems: redis,amqp,sqlite,postgres (results in "
        "the Redis above for amqp)",
    )
    args = parser.parse_args()
    lines: list[str] = [f"`python -m benchmarks.floors {' '.join(sys.argv[1:])}`", ""]

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    started = datetime.now(timezone.utc)
    try:
        with _server(args.redis_url) as (host, port, db):
            client = redis.Redis(host=host, port=port, db=db)
            if client.dbsize():
                raise SystemExit(f"redis://{host}:{port}/{db} is not empty")
            say(f"floors, plain redis-py, n={args.n}, redis://{host}:{port}/{db}")
            say("| | tasks/s | us per task | round trips | commands | Redis CPU us |")
            say("|---|---:|---:|---:|---:|---:|")
            for name, row in floors(client, args.n).items():
                say(
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
            say()
            for broker in args.broker.split(","):
                say()
                say(f"per task on {broker}, n={args.n} (client: add.delay; worker: prefork -c 2)")
                rows = {
                    system.name: system_costs(system, broker, options, ops, client)
                    for system in (
                        System("caraway", caraway_python()),
                        System("celery", celery_python()),
                    )
                }
                keys = list(rows["caraway"])
                say("| figure | caraway | Celery 5.7.0 |")
                say("|---|---:|---:|")
                for key in keys:
                    say(
                        f"| {key} | {rows['caraway'][key]:.3g} | {rows['celery'].get(key, 0):.3g} |"
                    )
            ops.call("release")
    finally:
        procs.stop_all()
        # the raw figures beside the runner's, as docs/benchmarks.md promises
        RESULTS.mkdir(parents=True, exist_ok=True)
        saved = RESULTS / f"floors-{started.strftime('%Y%m%dT%H%M%SZ')}.md"
        saved.write_text("\n".join(lines) + "\n")
        print(f"saved {saved}")


if __name__ == "__main__":
    main()
