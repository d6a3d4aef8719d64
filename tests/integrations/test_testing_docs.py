"""docs/testing.md's worked example, run as a user would: its files written to an empty
directory and pytest run there in a new process (the plugin found by its entry point)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytest_plugins = ["pytester"]

_BLOCK = re.compile(r"```python\n# (\S+\.py)\n(.*?)```", re.DOTALL)


def doc_files(doc: Path) -> dict[str, str]:
    """The ```python blocks of ``doc`` whose first line is ``# path/to/file.py``."""
    return {path: body for path, body in _BLOCK.findall(doc.read_text())}


def test_the_testing_guide_runs_from_an_empty_directory(pytester: pytest.Pytester) -> None:
    files = doc_files(ROOT / "docs" / "testing.md")
    assert set(files) >= {"proj/caraway.py", "tests/conftest.py", "tests/test_tasks.py"}
    pytester.mkpydir("proj")
    for path, body in files.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    result = pytester.runpytest_subprocess("tests", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=7)
