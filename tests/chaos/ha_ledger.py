"""The numbered-task ledger the failover tests share: a `proj` whose ``ledger(n)`` task
(acks_late) appends ``n`` to a file, a producer thread, and the count of what was lost or
run twice. ``CARAWAY_HA_LONG=1`` selects the long variants.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_project
from tests.integration.redisproj import forget_proj

LONG = bool(os.environ.get("CARAWAY_HA_LONG"))
COUNT = 3000 if LONG else 150

TASKS = """
import os
from .caraway import app


@app.task(acks_late=True)
def ledger(number):
    with open(os.environ['TEST_LEDGER'], 'a') as handle:
        handle.write(f'{number}\\n')
    return number


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(values):
    return sum(values)
"""
#: ride out the few seconds a failover takes
RETRY_POLICY = "{'max_retries': 30, 'interval_start': 0.2, 'interval_step': 0.2, 'interval_max': 1}"


def ledger_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_source: str, broker_url: str
) -> Iterator[Path]:
    """`proj` on ``broker_url`` (its ``TEST_BROKER``), importable here and by workers."""
    write_project(tmp_path, app_source=app_source, tasks_source=TASKS)
    monkeypatch.setenv("TEST_BROKER", broker_url)
    monkeypatch.setenv("TEST_LEDGER", str(tmp_path / "ledger.txt"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_proj()
    try:
        yield tmp_path
    finally:
        forget_proj()


@dataclass
class Producer:
    """Publishes ``ledger(0..COUNT-1)`` from a thread, a little apart."""

    task: Any
    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Producer:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        for number in range(COUNT):
            try:
                self.task.delay(number)
                self.sent.append(number)
            except Exception:  # a publish that raised may or may not have been written
                self.failed.append(number)
            time.sleep(0.01 if LONG else 0.02)
        # the app's connections are per thread: this thread's are closed here, or never
        with contextlib.suppress(Exception):
            self.task.app.close()
        self.done.set()


def settle(tmp_path: Path, sent: list[int], *, quiet: float = 15.0) -> list[int]:
    """The numbers run, once every sent one ran or nothing new arrived for ``quiet`` s."""
    path = tmp_path / "ledger.txt"
    last, quiet_since = -1, time.monotonic()
    while True:
        runs = [int(line) for line in (path.read_text().split() if path.exists() else [])]
        if set(sent) <= set(runs) or time.monotonic() - quiet_since > quiet:
            return [number for number in runs if number >= 0]
        if len(runs) != last:
            last, quiet_since = len(runs), time.monotonic()
        time.sleep(0.2)


def report(name: str, producer: Producer, runs: list[int], failovers: int) -> dict[str, int]:
    """Lost and duplicated counts, printed for docs/reliability.md."""
    counts = Counter(runs)
    figures = {
        "count": COUNT,
        "failovers": failovers,
        "published": len(producer.sent),
        "publish_raised": len(producer.failed),
        "lost": len(set(producer.sent) - set(counts)),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
    }
    print(f"{name} ledger:", json.dumps(figures))
    return figures
