"""Where a caraway drain spends its CPU: children, supervisor, Redis, RabbitMQ, per task.

    .venv/bin/python -m benchmarks.cpu_per_task --n 20000 [--broker amqp] [--system celery]

Queues N ``add`` tasks (on a private Redis db, or on RabbitMQ with results in that db),
starts a worker (prefork, 2 children), waits until every result is written, then reads the
CPU time of the supervisor and its children (/proc), of Redis (INFO cpu) and of RabbitMQ
(its beam.smp process, when it runs here) and divides by N. The drain is
bound by CPU on a 2-core machine, so these figures are its cost model: what to cut to go
faster. ``--system celery`` measures Celery's worker the same way (its own venv), for
where each system's CPU goes; the comparison of rates is ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from benchmarks import procs
from benchmarks.celery_env import caraway_python, celery_python

APP = """
from caraway import Caraway

app = Caraway("benchapp", broker="{broker}", backend="{url}")
app.conf.task_default_queue = "cpu-per-task"


@app.task
def add(x, y):
    return x + y
"""

FILL = """
import sys
from benchapp import add, app

with app.publishing_batch():
    ids = [add.delay(i, i).id for i in range(int(sys.argv[1]))]
print(" ".join(ids))
"""

#: the same app and fill for Celery (which has no publishing batch)
CELERY_APP = APP.replace("from caraway import Caraway", "from celery import Celery as Caraway")
CELERY_FILL = """
import sys
from benchapp import add

print(" ".join(add.delay(i, i).id for i in range(int(sys.argv[1]))))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--redis-port", type=int, default=6379, help="a private server's port")
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--pool", choices=("prefork", "solo", "threads"), default="prefork")
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("-E", "--events", action="store_true", help="worker sends task events")
    parser.add_argument("--system", choices=("caraway", "celery"), default="caraway")
    args = parser.parse_args()
    url = f"redis://127.0.0.1:{args.redis_port}/{args.redis_db}"
    client = redis.Redis.from_url(url)
    if client.dbsize():
        sys.exit(f"db {args.redis_db} is not empty; pick another with --redis-db")
    celery = args.system == "celery"
    python = str(celery_python() if celery else caraway_python())
    with tempfile.TemporaryDirectory() as tmp:
        broker = url if args.broker == "redis" else "amqp://guest:guest@127.0.0.1:5672//"
        app = CELERY_APP if celery else APP
        Path(tmp, "benchapp.py").write_text(app.format(broker=broker, url=url))
        Path(tmp, "fill.py").write_text(CELERY_FILL if celery else FILL)
        env = {**os.environ, "PYTHONPATH": tmp}
        filled = subprocess.run(
            [python, "fill.py", str(args.n)], cwd=tmp, env=env, check=True, capture_output=True
        )
        waiting = [f"celery-task-meta-{i}" for i in filled.stdout.decode().split()]
        argv = [python, "-m", args.system, "-A", "benchapp", "worker", "-l", "warning"]
        argv += ["-P", args.pool, "-c", str(args.concurrency), *(["-E"] if args.events else [])]
        rabbit = rabbit_pid()
        before = redis_cpu(client)
        rabbit_before = cpu_seconds(rabbit) if rabbit else 0.0
        started = time.monotonic()
        worker = procs.spawn(argv, env=env, cwd=Path(tmp), log=Path(tmp, "worker.log"))
        try:
            while args.broker == "redis" and client.llen("cpu-per-task"):
                time.sleep(0.05)
            while waiting:  # the last results, once the queue is empty
                written = client.exists(*waiting[-1000:])
                waiting = waiting[:-1000] if written == len(waiting[-1000:]) else waiting
                time.sleep(0.01)
            wall = time.monotonic() - started
            listed = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text()
            children = [int(pid) for pid in listed.split()]
            child_cpu = sum(cpu_seconds(pid) for pid in children)
            parent_cpu = cpu_seconds(worker.pid)
            server_cpu = redis_cpu(client) - before
            rabbit_cpu = cpu_seconds(rabbit) - rabbit_before if rabbit else 0.0
        finally:
            procs.stop(worker)
            client.flushdb()
            if args.broker == "amqp":
                delete_queue("cpu-per-task")
    per_task = 1e6 / args.n
    print(
        f"{args.system}: {args.n} tasks in {wall:.2f}s (with start-up): "
        f"children {child_cpu * per_task:.0f} us, "
        f"supervisor {parent_cpu * per_task:.0f} us (with start-up), "
        f"Redis {server_cpu * per_task:.0f} us"
        + (f", RabbitMQ {rabbit_cpu * per_task:.0f} us" if rabbit else "")
        + " of CPU per task"
    )


def delete_queue(name: str) -> None:
    import amqp

    connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()


def rabbit_pid() -> int | None:
    """RabbitMQ's Erlang VM on this machine, if there is one."""
    found = subprocess.run(["pgrep", "-o", "beam.smp"], check=False, capture_output=True, text=True)
    return int(found.stdout.split()[0]) if found.stdout.strip() else None


if __name__ == "__main__":
    main()
