"""What routing costs a ``delay()`` when ``task_queues`` is set, on the memory broker.

``python -m benchmarks.routing_cost`` prints, for a default route and a routed one, the
function calls cProfile counts per delay() and the median microseconds per delay() over
interleaved rounds (the machine is shared: rounds of each case alternate, and the median of
the round medians is reported). No broker I/O: what is left is the publish path's own cost.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

from caraway import Caraway, Exchange, Queue

ROUNDS = 15
CALLS = 2000


def _app() -> tuple[Caraway, Any]:
    app = Caraway("routing-cost", broker="memory://routing-cost", backend=None)
    app.conf.task_queues = [
        Queue("celery"),
        Queue("feed", Exchange("feed", "topic"), routing_key="feed.#"),
        Queue("images", Exchange("media", "direct"), routing_key="images"),
        Queue("video", Exchange("media", "direct"), routing_key="video"),
    ]
    app.conf.task_routes = {"bench.routed": {"queue": "images"}}

    @app.task(name="bench.plain", ignore_result=True)
    def plain(x: int) -> int:
        return x

    @app.task(name="bench.routed", ignore_result=True)
    def routed(x: int) -> int:
        return x

    return app, {"default route": plain, "task_routes + task_queues": routed}


def _calls_per_delay(send: Callable[[], Any]) -> float:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(200):
        send()
    profile.disable()
    return float(pstats.Stats(profile).total_calls) / 200  # type: ignore[attr-defined]


def _round(send: Callable[[], Any]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        send()
    return (time.perf_counter() - start) / CALLS * 1e6


def main() -> None:
    app, tasks = _app()
    admin = app.admin()
    sends = {name: (lambda task=task: task.delay(1)) for name, task in tasks.items()}
    for send in sends.values():
        send()  # warm up: connections, caches
    calls = {name: _calls_per_delay(send) for name, send in sends.items()}
    timings: dict[str, list[float]] = {name: [] for name in sends}
    for _ in range(ROUNDS):
        for name, send in sends.items():
            timings[name].append(_round(send))
            for queue in ("celery", "images"):
                admin.purge(queue)
    for name in sends:
        median = statistics.median(timings[name])
        spread = f"{min(timings[name]):.1f}-{max(timings[name]):.1f}"
        print(f"{name:28s} {calls[name]:7.0f} calls/delay  {median:7.1f} us/delay ({spread})")
    app.close()


if __name__ == "__main__":
    main()
