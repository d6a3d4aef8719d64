"""Waiting for a condition with a deadline, and the skip-locally / fail-in-CI rule."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def require(condition: Any, why: str) -> None:
    """Skip locally, fail in CI: a test that needs a service never silently passes."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why} (required in CI)")
    pytest.skip(why)
