"""Suite-wide hygiene: every app a test created has its connections closed afterwards, and in
CI a skipped test fails the run unless it is allowed, with a reason."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from caraway import current


@pytest.fixture(autouse=True)
def _close_apps() -> Iterator[None]:
    yield
    for app in list(current._apps):
        # a connection to a broker that went away may fail to close; it is gone anyway
        with contextlib.suppress(Exception):
            app.close()


#: skips CI accepts, by test node id, each with its reason; any other skip fails a CI run,
#: so a suite can never go green by not running (a missing service, a missing package)
ALLOWED_SKIPS: dict[str, str] = {}


def _skip_fails_here(nodeid: str) -> bool:
    return bool(os.environ.get("CI")) and nodeid not in ALLOWED_SKIPS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and _skip_fails_here(item.nodeid):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI, which fails the run: {_reason(report.longrepr)} "
            "(make it run, or add it to ALLOWED_SKIPS in tests/conftest.py with a reason)"
        )


@pytest.hookimpl(tryfirst=True)  # before the terminal reporter files the report as a skip
def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped and _skip_fails_here(report.nodeid):
        report.outcome = "failed"
        report.longrepr = f"module skipped in CI, which fails the run: {_reason(report.longrepr)}"


def _reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)
