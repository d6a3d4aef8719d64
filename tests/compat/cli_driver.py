"""Run a case's ``cli.txt`` commands in one interpreter: ``python cli_driver.py FLAVOUR``.

Each line runs as ``python -m FLAVOUR -A proj LINE`` would (the module's ``__main__`` with
that argv), printing ``$ LINE``, the command's standard output and ``[exit N]`` when it
fails. One interpreter for the sixteen commands instead of sixteen: Celery's command line
takes over a second to import, which was most of the case's time.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main(flavour: str) -> None:
    lines = [line.strip() for line in Path("cli.txt").read_text().splitlines() if line.strip()]
    for line in lines:
        print(f"$ {line}", flush=True)
        sys.argv = [flavour, "-A", "proj", *line.split()]
        code: object = 0
        try:
            runpy.run_module(flavour, run_name="__main__", alter_sys=False)
        except SystemExit as exit_:
            code = exit_.code
        sys.stdout.flush()
        if code not in (0, None):
            print(f"[exit {code if isinstance(code, int) else 1}]", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
