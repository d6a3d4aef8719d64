"""W2, W7, W10, first half: queue N tasks with no worker running; write their ids and the
value each must return.

``fill N IDS`` queues ``add(i, i)`` on the default queue (W2); ``fill N IDS queues K``
spreads the same calls over K queues named ``<default>.0`` ... (W7); ``fill N IDS payload
KIB`` queues ``size(blob)`` with a blob of KIB KiB (W10).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.scripts._common import emit, load_app, run


def main(argv: Sequence[str]) -> None:
    n, ids_path = int(argv[0]), Path(argv[1])
    mode, value = (argv[2], int(argv[3])) if len(argv) > 3 else ("plain", 0)
    module = load_app()
    expected: list[Any]
    if mode == "payload":
        blob = "x" * (value * 1024)
        ids = [module.size.delay(blob).id for _ in range(n)]
        expected = [len(blob)] * n
    elif mode == "queues":
        queue = module.QUEUE
        ids = [module.add.apply_async((i, i), queue=f"{queue}.{i % value}").id for i in range(n)]
        expected = [2 * i for i in range(n)]
    else:
        ids = [module.add.delay(i, i).id for i in range(n)]
        expected = [2 * i for i in range(n)]
    ids_path.write_text(json.dumps({"ids": ids, "expected": expected}))
    emit(queued=n)


if __name__ == "__main__":
    run(main)
