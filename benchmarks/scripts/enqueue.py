"""W1: send N ``add.delay(i, i)`` from one process, no worker running; reports tasks/s."""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks.scripts._common import emit, load_app, run

WARMUP = 20


def main(argv: Sequence[str]) -> None:
    n = int(argv[0])
    add = load_app().add
    # the first sends open the connection and declare the queue; neither is what W1 measures
    for i in range(WARMUP):
        add.delay(i, i)
    started = time.perf_counter()
    for i in range(n):
        add.delay(i, i)
    elapsed = time.perf_counter() - started
    emit(rate=n / elapsed, seconds=elapsed)


if __name__ == "__main__":
    run(main)
