"""Python function calls per task, counted by cProfile: what to cut, whatever the machine's load.

    .venv/bin/python -m benchmarks.calls [--n 10000] [--queues 50] [--payload-kib 100]
    .venv/bin/python -m benchmarks.calls --src /work/main/src   # another tree, to compare
    .venv/bin/python -m benchmarks.calls --top 60   # and each child's busiest functions
    .venv/bin/python -m benchmarks.calls --broker amqp   # RabbitMQ (results in Redis)

Prints the calls one ``add.delay(i, i)`` makes on Redis (W1's client), then drains N tasks
with a prefork -c 2 worker and prints the calls per task in each child (cProfile started by
``worker_process_init``, saved at ``worker_process_shutdown``) and in the supervisor (the
worker runs under ``python -m cProfile``). ``--queues K`` spreads the tasks over K queues
consumed with ``-Q`` (W7); ``--payload-kib`` sends ``size(blob)`` tasks (W10). Timings
under a profiler on a shared machine mean little; call counts do not move with the load.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from benchmarks import procs
from benchmarks.celery_env import caraway_python

APP = """
import cProfile
import os

from caraway import Caraway, signals

app = Caraway("benchapp", broker="{broker}", backend="{url}")
app.conf.task_default_queue = "calls-per-task"
_profile = cProfile.Profile()


@app.task(name="benchapp.add")
def add(x, y):
    return x + y


@app.task(name="benchapp.size")
def size(blob):
    return len(blob)


@signals.worker_process_init.connect
def _start(**_):
    _profile.enable()


@signals.worker_process_shutdown.connect
def _stop(**_):
    _profile.disable()
    _profile.dump_stats(f"child-{{os.getpid()}}.prof")
"""

CLIENT = """
import cProfile, pstats
from benchapp import add

for i in range(20):
    add.delay(i, i)
profile = cProfile.Profile()
profile.enable()
for i in range(1000):
    add.delay(i, i)
profile.disable()
print(pstats.Stats(profile).total_calls / 1000)
"""

FILL = """
import sys
from benchapp import add, app, size

n, queues, kib = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with app.publishing_batch():
    if kib:
        blob = "x" * (kib * 1024)
        ids = [size.delay(blob).id for _ in range(n)]
    elif queues:
        ids = [add.apply_async((i, i), queue=f"calls-per-task.{i % queues}").id for i in range(n)]
    else:
        ids = [add.delay(i, i).id for i in range(n)]
print(ids[-1])
"""


#: RabbitMQ for ``--broker amqp`` (results stay in the Redis db)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def delete_queues(names: list[str]) -> None:
    """Remove what an ``--broker amqp`` run declared (and whatever it left queued)."""
    import amqp  # the benchmark venv has it; only this broker needs it

    connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


def calls_per_task(path: Path) -> tuple[float, int]:
    """(calls per task, tasks) of one profile: tasks are the calls of the task functions."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    tasks = sum(v[1] for k, v in entries.items() if k[2] in ("add", "size") and "benchapp" in k[0])
    total = stats.total_calls  # type: ignore[attr-defined]
    return (total / tasks if tasks else float("nan")), tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--redis-db", type=int, default=2)
    parser.add_argument("--redis-port", type=int, default=6379, help="a private server's port")
    parser.add_argument("--queues", type=int, default=0, help="spread over this many queues")
    parser.add_argument("--payload-kib", type=int, default=0, help="size(blob) tasks of KiB")
    parser.add_argument("--src", help="import caraway from this src/ directory instead")
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--keep", help="copy the profiles (child-PID.prof, ...) to this directory")
    parser.add_argument("--top", type=int, default=0, help="print each child's N busiest functions")
    args = parser.parse_args()
    url = f"redis://127.0.0.1:{args.redis_port}/{args.redis_db}"
    client = redis.Redis.from_url(url)
    if client.dbsize():
        sys.exit(f"db {args.redis_db} is not empty; pick another with --redis-db")
    python = str(caraway_python())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = url if args.broker == "redis" else AMQP_URL
        (work / "benchapp.py").write_text(APP.format(url=url, broker=broker))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*filter(None, [args.src]), tmp])}
        try:
            client_calls = _run(python, work, env, "-c", CLIENT).strip()
            client.flushdb()
            print(f"W1 client: {float(client_calls):.0f} calls per delay() on {args.broker}")
            (work / "fill.py").write_text(FILL)
            sizes = (str(args.n), str(args.queues), str(args.payload_kib))
            last = _run(python, work, env, "fill.py", *sizes)
            _drain(python, work, env, client, last.strip(), args.queues)
        finally:
            client.flushdb()
            if args.broker == "amqp":
                delete_queues(
                    ["calls-per-task"] + [f"calls-per-task.{i}" for i in range(args.queues)]
                )
        for path in sorted(work.glob("child-*.prof")):
            calls, tasks = calls_per_task(path)
            print(f"child {path.stem[6:]}: {calls:.0f} calls per task over {tasks} tasks")
            if args.top:
                _top(path, tasks, args.top)
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            for path in work.glob("*.prof"):
                shutil.copy(path, Path(args.keep) / path.name)
        total = pstats.Stats(str(work / "supervisor.prof")).total_calls  # type: ignore[attr-defined]
        print(f"supervisor: {total / args.n:.1f} calls per task (start-up included)")


def _top(path: Path, tasks: int, n: int) -> None:
    """The N functions with the most calls per task, builtins included, and their own time."""
    entries = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    rows = sorted(entries.items(), key=lambda item: -item[1][1])[:n]
    for (file, line, name), (_, calls, own, *_rest) in rows:
        where = f"{Path(file).name}:{line}" if line else "~"
        print(f"  {calls / tasks:6.2f}  {own / max(calls, 1) * 1e6:6.2f} us  {name}  {where}")


def _run(python: str, work: Path, env: dict[str, str], *argv: str) -> str:
    done = subprocess.run([python, *argv], cwd=work, env=env, check=True, capture_output=True)
    return done.stdout.decode()


def _drain(
    python: str, work: Path, env: dict[str, str], client: redis.Redis, last: str, queues: int
) -> None:
    argv = [python, "-m", "cProfile", "-o", "supervisor.prof", "-m", "caraway", "-A", "benchapp"]
    argv += ["worker", "-l", "warning", "-P", "prefork", "-c", "2"]
    if queues:
        argv += ["-Q", ",".join(f"calls-per-task.{i}" for i in range(queues))]
    worker = procs.spawn(argv, env=env, cwd=work, log=work / "worker.log")
    try:
        deadline = time.monotonic() + 600
        while not client.exists(f"celery-task-meta-{last}"):
            if time.monotonic() > deadline:
                raise TimeoutError("the drain did not finish in 10 minutes")
            time.sleep(0.1)
        time.sleep(0.5)  # the other child's last task
    finally:
        procs.stop(worker)


if __name__ == "__main__":
    main()
