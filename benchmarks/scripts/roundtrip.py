"""W3: sequential ``add.delay(1, 1).get()`` against a running worker; p50/p90/p99 in ms."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from benchmarks.scripts._common import emit, load_app, percentile, run

WARMUP = 20


def main(argv: Sequence[str]) -> None:
    count = int(argv[0])
    add = load_app().add
    add.delay(0, 0).get(timeout=60)  # returns once the worker consumes: it is ready
    for _ in range(WARMUP):
        add.delay(1, 1).get(timeout=10)
    samples: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        value = add.delay(1, 1).get(timeout=10)
        samples.append((time.perf_counter() - started) * 1000)
        if value != 2:
            raise AssertionError(f"add(1, 1) returned {value!r}")
    emit(
        p50=percentile(samples, 50),
        p90=percentile(samples, 90),
        p99=percentile(samples, 99),
        mean=statistics.fmean(samples),
    )


if __name__ == "__main__":
    run(main)
