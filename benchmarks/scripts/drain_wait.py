"""W2, second half: wait (cheaply) until the worker ran every queued task, then time it.

The rate is (N - 1) / (last date_done - first date_done): the worker's own timestamps, so
neither worker start-up nor this process's polling is in the figure. While the worker drains,
this process only reads the last task's state ten times a second to leave both cores to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.scripts._common import emit, load_app, run, timestamp


def _wait_ready(result: Any, deadline: float, pause: float) -> None:
    while not result.ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {result.id} not done before the deadline")
        time.sleep(pause)


def main(argv: Sequence[str]) -> None:
    filled = json.loads(Path(argv[0]).read_text())
    ids, expected = filled["ids"], filled["expected"]
    deadline = time.monotonic() + float(argv[1])
    app = load_app().app
    results = [app.AsyncResult(task_id) for task_id in ids]
    _wait_ready(results[-1], deadline, 0.1)
    done: list[float] = []
    wrong = 0
    for index, result in enumerate(results):
        _wait_ready(result, deadline, 0.02)
        if result.result != expected[index]:
            wrong += 1
        done.append(timestamp(result.date_done))
    span = max(done) - min(done)
    emit(rate=(len(ids) - 1) / span if span > 0 else 0.0, seconds=span, wrong=wrong)


if __name__ == "__main__":
    run(main)
