"""W8: far-future countdowns, and the lag of a countdown that comes due.

``countdowns park N`` sends N ``add.apply_async((i, i), countdown=3600)`` (each system's
own send path; the runner reads the worker's RSS and Redis's memory around it).
``countdowns lag B S`` sends B tasks with ``countdown=S`` against the running worker and
reports how long after its ETA each one was done (``date_done - (send time + S)``, the
send time read just before the call, so the figure can only be too large), p50/p99/max ms.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks.scripts._common import emit, load_app, percentile, run, timestamp

PARK_SECONDS = 3600


def park(n: int) -> None:
    add = load_app().add
    started = time.perf_counter()
    for i in range(n):
        add.apply_async((i, i), countdown=PARK_SECONDS)
    emit(parked=n, seconds=time.perf_counter() - started)


def lag(count: int, seconds: float) -> None:
    add = load_app().add
    add.delay(0, 0).get(timeout=120)  # the worker consumes: the countdowns can start
    sent: list[tuple[float, object]] = []
    for i in range(count):
        eta = time.time() + seconds
        sent.append((eta, add.apply_async((i, i), countdown=seconds)))
    lags = []
    deadline = time.monotonic() + seconds + 120
    for eta, result in sent:
        while not result.ready():  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise TimeoutError("a countdown task was not done 120 s after its ETA")
            time.sleep(0.05)
        lags.append((timestamp(result.date_done) - eta) * 1000)  # type: ignore[attr-defined]
    emit(
        lag_p50=percentile(lags, 50),
        lag_p99=percentile(lags, 99),
        lag_max=max(lags),
        early=sum(1 for value in lags if value < 0),
    )


def main(argv: Sequence[str]) -> None:
    if argv[0] == "park":
        park(int(argv[1]))
    else:
        lag(int(argv[1]), float(argv[2]))


if __name__ == "__main__":
    run(main)
