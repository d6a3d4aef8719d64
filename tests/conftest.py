"""Suite-wide hygiene: every app a test created has its connections closed afterwards; in CI a
skipped or xfail test fails the run unless it is allowed, with a reason; ``soak`` tests run
only when ``-m`` names them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from caraway import current

# CI runs every property test on the same examples (a red run can be replayed, a green one is
# not luck); locally they stay random, which is how new cases are found
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long runs (``soak``) only when ``-m`` names them: CI and a plain run never pay for them."""
    if "soak" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("soak") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def _skip_fails_here(nodeid: str) -> bool:
    return bool(os.environ.get("CI")) and nodeid not in ALLOWED_SKIPS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    xfail = getattr(report, "wasxfail", None)
    if xfail is not None and (report.skipped or report.passed) and _skip_fails_here(item.nodeid):
        # an expected failure hides a gap as well as a skip does (xfailed or xpassed)
        report.outcome = "failed"
        report.longrepr = (
            f"xfail in CI, which fails the run: {xfail or 'no reason'} "
            "(fix it, or add it to ALLOWED_SKIPS in tests/conftest.py with a reason)"
        )
    elif report.skipped and _skip_fails_here(item.nodeid):
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
