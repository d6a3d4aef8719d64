"""W9: how long a ``ping`` broadcast takes to hear every node of an idle fleet.

``fleet_ping F T 0`` pings until all F nodes answer (at most T s in all): the fleet is up.
``fleet_ping F T R`` sends one untimed ping (the connection), then R timed ones, each
``app.control.broadcast("ping", reply=True, timeout=T, limit=F)`` (both systems' API,
returning as soon as F replies are in), and reports the median seconds and the fewest
replies heard.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.scripts._common import emit, load_app, run


def _ping(app: Any, nodes: int, timeout: float) -> int:
    replies = app.control.broadcast("ping", reply=True, timeout=timeout, limit=nodes)
    return len(replies or [])


def main(argv: Sequence[str]) -> None:
    nodes, timeout, repeats = int(argv[0]), float(argv[1]), int(argv[2])
    app = load_app().app
    if repeats == 0:
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < timeout:
            answered = _ping(app, nodes, 2.0)
            if answered >= nodes:
                break
        emit(heard=answered, seconds=time.monotonic() - started)
        return
    _ping(app, nodes, timeout)
    times: list[float] = []
    heard: list[int] = []
    for _ in range(repeats):
        started = time.perf_counter()
        heard.append(_ping(app, nodes, timeout))
        times.append(time.perf_counter() - started)
    emit(seconds=statistics.median(times), heard=min(heard), samples=times)


if __name__ == "__main__":
    run(main)
