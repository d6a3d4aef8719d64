"""W1: send N ``add.delay(i, i)`` from one process, no worker running; reports tasks/s.

W1c (``enqueue N confirm``): the same, with Celery's ``confirm_publish`` on, so that each
Celery ``delay()`` also returns only once RabbitMQ has confirmed the message, as caraway's
always does (caraway's app is left as it is).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks.scripts._common import emit, load_app, run

WARMUP = 20


def main(argv: Sequence[str]) -> None:
    n = int(argv[0])
    module = load_app()
    add = module.add
    if argv[1:] == ["confirm"] and type(module.app).__name__ == "Celery":
        module.app.conf.broker_transport_options = {"confirm_publish": True}
    # the first sends open the connection and declare the queue; neither is what W1 measures
    for i in range(WARMUP):
        add.delay(i, i)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        add.delay(i, i)
    elapsed = time.perf_counter() - started
    # the client's own CPU per task (benchmarks.floors' cost model)
    cpu_us = (time.process_time() - cpu) * 1e6 / n
    emit(rate=n / elapsed, seconds=elapsed, cpu_us=cpu_us)


if __name__ == "__main__":
    run(main)
