"""Print a system's version and the defaults the table header states (prefetch, acks, format).

Run as ``describe caraway`` with caraway's interpreter or ``describe celery`` with Celery's;
the values are read from a fresh app, so the header cannot drift from the real defaults.
"""

from __future__ import annotations

import importlib
import platform
from collections.abc import Sequence
from typing import Any

from benchmarks.scripts._common import emit, run


def _app(system: str) -> tuple[str, Any]:
    # imported by name: each interpreter has only its own system installed
    module: Any = importlib.import_module(system)
    cls = module.Caraway if system == "caraway" else module.Celery
    return str(module.__version__), cls("describe", set_as_current=False).conf


def main(argv: Sequence[str]) -> None:
    version, conf = _app(argv[0])
    emit(
        version=version,
        python=platform.python_version(),
        prefetch_multiplier=conf.worker_prefetch_multiplier,
        acks_late=bool(conf.task_acks_late),
        serializer=conf.task_serializer,
    )


if __name__ == "__main__":
    run(main)
