"""W6, first half: queue a backlog of N tasks fast, with no worker running.

``fill_raw N IDS K`` sends one ``add(1, 1)`` through the system's own ``delay()``, takes
that message back off the queue (``RPOP``), and pushes N copies of it with pipelined
``LPUSH`` (1,000 messages a command), each with a fresh task id and delivery tag. So each
system's backlog holds exactly the messages its own producer writes, and a million of them
take seconds instead of the quarter of an hour Celery's ``delay()`` loop would (its ~3,000/s
would measure the producer, which W1 already does). Writes the ids of the first K
(consumed first: the worker pops from the right) for ``drain_wait``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from benchmarks.scripts._common import emit, load_app, run

BATCH = 1000
#: LPUSH commands sent per pipeline round trip
PIPELINE = 10


def _broker_url(app: Any) -> str:
    url = getattr(app, "broker_url", None) or app.conf.broker_url
    return str(url)


def main(argv: Sequence[str]) -> None:
    n, ids_path, first = int(argv[0]), Path(argv[1]), int(argv[2])
    module = load_app()
    queue = module.QUEUE
    client = redis.Redis.from_url(_broker_url(module.app))
    module.add.delay(1, 1)
    template: Any = client.rpop(queue)
    if not isinstance(template, bytes) or client.llen(queue):
        raise RuntimeError(f"expected exactly one message in {queue!r} after one delay()")
    envelope = json.loads(template)
    old_id = envelope["headers"]["id"].encode()
    old_tag = envelope["properties"]["delivery_tag"].encode()
    ids: list[str] = []
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    queued = 0
    while queued < n:
        batch = []
        for _ in range(min(BATCH, n - queued)):
            task_id = str(uuid.uuid4())
            if len(ids) < first:
                ids.append(task_id)
            tag = str(uuid.uuid4()).encode()
            batch.append(template.replace(old_id, task_id.encode()).replace(old_tag, tag))
        pipe.lpush(queue, *batch)
        queued += len(batch)
        if len(pipe) >= PIPELINE or queued >= n:
            pipe.execute()
    elapsed = time.perf_counter() - started
    ids_path.write_text(json.dumps({"ids": ids, "expected": [2] * len(ids)}))
    emit(queued=n, seconds=elapsed, message_bytes=len(template), length=int(client.llen(queue)))


if __name__ == "__main__":
    run(main)
