"""Redis's ``reply_spin`` on (the default) and off, in alternating rounds.

    .venv/bin/python -m benchmarks.reply_spin [--rounds 10] [--redis-db 5]

What polling for a reply before sleeping on it buys (``caraway.clients.redis.ReplySpin``).
This machine's speed drifts by as much as 2x within minutes, so the two settings are never
compared across runs: each round measures both, in alternating order, and the report gives
the median of each and of the per-round ratio. Three measurements, each a fresh process
with ``broker_transport_options`` and ``result_backend_transport_options`` set alike:

- **delay**: one process sends N ``add.delay()`` (no worker): rate and the client's CPU
  per call (``time.process_time``: polling spends CPU a sleeping reader would not);
- **round trip**: ``add.delay(i, i).get()`` against a worker (prefork, 2 children), p50
  and p99 of 300;
- **drain**: a worker (prefork, 2 children) drains a full queue; the rate over a 2 s
  window once it is under way (start-up left out), read from the list's length.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from benchmarks import procs
from benchmarks.celery_env import caraway_python

QUEUE = "reply-spin"

APP = """
import os

from caraway import Caraway

app = Caraway("benchapp", broker="{url}", backend="{url}")
app.conf.task_default_queue = "{queue}"
if os.environ.get("REPLY_SPIN"):
    options = {{"reply_spin": float(os.environ["REPLY_SPIN"])}}
    app.conf.broker_transport_options = options
    app.conf.result_backend_transport_options = options


@app.task
def add(x, y):
    return x + y
"""

DELAY = """
import sys, time
from benchapp import add

for i in range(20):  # connect and declare first
    add.delay(i, i)
n = int(sys.argv[1])
started, cpu = time.perf_counter(), time.process_time()
for i in range(n):
    add.delay(i, i)
print(n / (time.perf_counter() - started), (time.process_time() - cpu) * 1e6 / n)
"""

ROUND_TRIP = """
import sys, time
from benchapp import add

add.delay(0, 0).get(timeout=30)
took = []
for i in range(int(sys.argv[1])):
    started = time.perf_counter()
    add.delay(i, i).get(timeout=30)
    took.append((time.perf_counter() - started) * 1e3)
took.sort()
print(took[len(took) // 2], took[int(len(took) * 0.99)])
"""

FILL = """
import sys
from benchapp import add, app

with app.publishing_batch():
    for i in range(int(sys.argv[1])):
        add.delay(i, i)
"""

#: the two settings: the default (no option set) and off
SETTINGS = {"on": "", "off": "0"}


class Bench:
    def __init__(self, tmp: Path, url: str, client: redis.Redis) -> None:
        self.tmp, self.client = tmp, client
        self.python = str(caraway_python())
        Path(tmp, "benchapp.py").write_text(APP.format(url=url, queue=QUEUE))
        for name, source in (("delay", DELAY), ("round_trip", ROUND_TRIP), ("fill", FILL)):
            Path(tmp, f"{name}.py").write_text(source)

    def env(self, setting: str) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.tmp), "REPLY_SPIN": SETTINGS[setting]}

    def script(self, name: str, setting: str, *args: str) -> list[float]:
        done = subprocess.run(
            [self.python, f"{name}.py", *args],
            cwd=self.tmp,
            env=self.env(setting),
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return [float(field) for field in done.stdout.split()]

    def worker(self, setting: str) -> subprocess.Popen[bytes]:
        argv = [self.python, "-m", "caraway", "-A", "benchapp", "worker", "-l", "warning"]
        argv += ["-P", "prefork", "-c", "2"]
        return procs.spawn(argv, env=self.env(setting), cwd=self.tmp, log=self.tmp / "worker.log")

    def delay(self, setting: str, n: int) -> list[float]:
        try:
            return self.script("delay", setting, str(n))
        finally:
            self.client.flushdb()

    def round_trip(self, setting: str, n: int) -> list[float]:
        worker = self.worker(setting)
        try:
            return self.script("round_trip", setting, str(n))
        finally:
            procs.stop(worker)
            self.client.flushdb()

    def drain(self, setting: str, n: int) -> list[float]:
        self.script("fill", setting, str(n))
        worker = self.worker(setting)
        try:
            deadline = time.monotonic() + 60
            while self.client.llen(QUEUE) > n * 0.8:  # under way: children started
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start draining: {self.tmp}/worker.log")
                time.sleep(0.02)
            before, started = self.client.llen(QUEUE), time.monotonic()
            time.sleep(2.0)
            after, took = self.client.llen(QUEUE), time.monotonic() - started
            if after == 0:
                raise RuntimeError("the queue ran dry inside the window: raise --drain-n")
            return [(before - after) / took]
        finally:
            procs.stop(worker)
            self.client.flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--delay-n", type=int, default=5000)
    parser.add_argument("--round-trip-n", type=int, default=300)
    parser.add_argument("--drain-n", type=int, default=60000)
    args = parser.parse_args()
    url = f"redis://127.0.0.1:6379/{args.redis_db}"
    client = redis.Redis.from_url(url)
    if client.dbsize():
        sys.exit(f"db {args.redis_db} is not empty; pick another with --redis-db")
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), url, client)
        measures: list[tuple[str, Callable[[str], list[float]], tuple[str, ...]]] = [
            ("delay", lambda s: bench.delay(s, args.delay_n), ("calls/s", "client CPU us/call")),
            ("round trip", lambda s: bench.round_trip(s, args.round_trip_n), ("p50 ms", "p99 ms")),
            ("drain", lambda s: bench.drain(s, args.drain_n), ("tasks/s",)),
        ]
        for title, measure, names in measures:
            figures: dict[str, list[list[float]]] = {"on": [], "off": []}
            for round_ in range(args.rounds):
                for setting in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                    figures[setting].append(measure(setting))
            report(title, names, figures)
    client.close()


def report(title: str, names: tuple[str, ...], figures: dict[str, list[list[float]]]) -> None:
    print(f"{title} ({len(figures['on'])} rounds, each setting once per round, order alternating):")
    for i, name in enumerate(names):
        on = [row[i] for row in figures["on"]]
        off = [row[i] for row in figures["off"]]
        ratios = [a / b for a, b in zip(on, off, strict=True)]
        print(
            f"  {name}: on {_fig(statistics.median(on))} ({_fig(min(on))}-{_fig(max(on))}), "
            f"off {_fig(statistics.median(off))} ({_fig(min(off))}-{_fig(max(off))}); "
            f"on/off per round, median {statistics.median(ratios):.2f}"
        )


def _fig(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


if __name__ == "__main__":
    main()
