"""Fixtures of the fuzz suite, and the long variant kept out of CI.

Tests marked ``fuzz_long`` run only when asked for by marker:
``.venv/bin/python -m pytest tests/fuzz -m fuzz_long`` (docs/security.md); a plain run
(CI) deselects them, so they are never reported as skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Worker, write_project


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "fuzz_long" in (config.getoption("markexpr") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("fuzz_long") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh `proj` package in a temp dir, importable by this test and its workers."""
    write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]
    yield tmp_path
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Collects workers a test starts; stops all of them even when the test fails."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()
