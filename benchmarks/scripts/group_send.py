"""W1b: ``group(add.s(i, i) for i in range(N)).apply_async()`` from one process; tasks/s."""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks.scripts._common import emit, load_app, run


def main(argv: Sequence[str]) -> None:
    n = int(argv[0])
    bench = load_app()
    if bench.group is None:
        emit(unsupported="not supported yet")
        return
    add, group = bench.add, bench.group
    group(add.s(i, i) for i in range(10)).apply_async()  # connection and queue declaration
    started = time.perf_counter()
    group(add.s(i, i) for i in range(n)).apply_async()
    elapsed = time.perf_counter() - started
    emit(rate=n / elapsed, seconds=elapsed)


if __name__ == "__main__":
    run(main)
