"""The typed example runs (CI's ``mypy --strict`` checks its types and its caught mistakes)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_typed_example_runs_eagerly() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "typed.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5 5 hello ada? (try 0) 10 9"


def test_typed_example_is_in_the_mypy_run() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"examples/typed.py"' in text
