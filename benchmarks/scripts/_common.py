"""What every workload script shares: loading ``benchapp``, printing the result line, stats.

A script ends by printing exactly one line starting with ``RESULT_MARK`` followed by JSON;
an ImproperlyConfigured error (a broker scheme the system lacks) becomes ``unsupported``.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

RESULT_MARK = "BENCH-RESULT "


def load_app() -> Any:
    """The generated app module (on PYTHONPATH; its contents differ per system)."""
    return importlib.import_module("benchapp")


def emit(**values: Any) -> None:
    print(RESULT_MARK + json.dumps(values), flush=True)


def run(main: Callable[[Sequence[str]], None]) -> None:
    """Call ``main(argv)``; report a configuration error as 'unsupported' instead of failing."""
    try:
        main(sys.argv[1:])
    except Exception as exc:
        if type(exc).__name__ != "ImproperlyConfigured":
            raise
        traceback.print_exc()
        emit(unsupported=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def timestamp(value: Any) -> float:
    """A result document's ``date_done`` (datetime or ISO string) as a POSIX timestamp."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise TypeError(f"date_done is {value!r}, not a date")
    return value.timestamp()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0 < q <= 100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
