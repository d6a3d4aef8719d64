"""The CI gate of tests/conftest.py: with CI set, a skipped, xfailed or xpassed test fails
the run unless ALLOWED_SKIPS names it; without CI they pass through unchanged."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests import conftest


def _report(outcome: str, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(outcome=outcome, longrepr=("f.py", 1, "Skipped: why"), **extra,
                           skipped=outcome == "skipped", passed=outcome == "passed")  # fmt: skip


def _run(report: SimpleNamespace, nodeid: str = "tests/x.py::test_x") -> SimpleNamespace:
    hook: Any = conftest.pytest_runtest_makereport
    gen = hook(SimpleNamespace(nodeid=nodeid), None)
    next(gen)
    with pytest.raises(StopIteration):
        gen.send(SimpleNamespace(get_result=lambda: report))
    return report


@pytest.mark.parametrize(
    "report",
    [
        _report("skipped"),
        _report("skipped", wasxfail="known bug"),
        _report("passed", wasxfail="known bug"),
    ],
    ids=["skipped", "xfailed", "xpassed"],
)
def test_a_hidden_outcome_fails_a_ci_run(
    report: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    assert _run(report).outcome == "failed"


def test_an_allowed_skip_and_runs_outside_ci_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setitem(conftest.ALLOWED_SKIPS, "tests/x.py::test_x", "a reason")
    assert _run(_report("skipped")).outcome == "skipped"
    monkeypatch.delenv("CI")
    assert _run(_report("skipped", wasxfail="bug"), "tests/y.py::t").outcome == "skipped"
