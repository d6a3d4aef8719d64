"""W2, first half: queue N ``add.delay(i, i)`` with no worker running; write their ids."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.scripts._common import emit, load_app, run


def main(argv: Sequence[str]) -> None:
    n, ids_path = int(argv[0]), Path(argv[1])
    add = load_app().add
    ids = [add.delay(i, i).id for i in range(n)]
    ids_path.write_text(json.dumps(ids))
    emit(queued=n)


if __name__ == "__main__":
    run(main)
