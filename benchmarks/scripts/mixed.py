"""W11: short tasks sent among long ones on two queues; the short ones' latency.

``mixed L S SECONDS``: the worker consumes ``<queue>.long`` and ``<queue>.short`` (``-Q``,
prefork -c 2). Over L x SECONDS s this process sends one ``nap(SECONDS)`` to the long queue
every SECONDS s (so about one child is busy with a long task at any time and the other is
free) and S ``add(i, i)`` to the short queue at an even pace. A short task's latency is
its ``date_done`` minus the time read just before its ``apply_async``: a worker that lets a
short task wait in a busy child while the other child is idle shows it in the p99.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks.scripts._common import emit, load_app, percentile, run, timestamp


def main(argv: Sequence[str]) -> None:
    longs, shorts, seconds = int(argv[0]), int(argv[1]), float(argv[2])
    module = load_app()
    long_queue, short_queue = f"{module.QUEUE}.long", f"{module.QUEUE}.short"
    module.add.apply_async((0, 0), queue=short_queue).get(timeout=120)  # the worker is up
    duration = longs * seconds
    plan = [(k * seconds, "long", k) for k in range(longs)]
    plan += [(j * duration / shorts, "short", j) for j in range(shorts)]
    plan.sort()
    sent: list[tuple[float, object]] = []
    naps = []
    start = time.monotonic()
    for due, kind, index in plan:
        pause = start + due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if kind == "long":
            naps.append(module.nap.apply_async((seconds,), queue=long_queue))
        else:
            at = time.time()
            sent.append((at, module.add.apply_async((index, index), queue=short_queue)))
    deadline = time.monotonic() + duration + 120
    latencies = []
    for at, result in sent:
        while not result.ready():  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise TimeoutError("short tasks not done 120 s after the last was sent")
            time.sleep(0.02)
        latencies.append((timestamp(result.date_done) - at) * 1000)  # type: ignore[attr-defined]
    for result in naps:
        result.get(timeout=max(1.0, deadline - time.monotonic()))
    emit(
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        max=max(latencies),
        over_1s=sum(1 for value in latencies if value > 1000),
    )


if __name__ == "__main__":
    run(main)
