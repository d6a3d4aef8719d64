"""W4: ``chord(add.s(i, i) for i in range(N))(tsum.s()).get()`` end to end, in seconds."""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks.scripts._common import emit, load_app, run


def main(argv: Sequence[str]) -> None:
    size = int(argv[0])
    bench = load_app()
    if bench.chord is None:
        emit(unsupported="not supported yet")
        return
    add, tsum, chord = bench.add, bench.tsum, bench.chord
    add.delay(0, 0).get(timeout=60)  # returns once the worker consumes: it is ready
    started = time.perf_counter()
    value = chord(add.s(i, i) for i in range(size))(tsum.s()).get(timeout=600)
    elapsed = time.perf_counter() - started
    if value != size * (size - 1):
        raise AssertionError(f"chord returned {value!r}, expected {size * (size - 1)}")
    emit(seconds=elapsed)


if __name__ == "__main__":
    run(main)
