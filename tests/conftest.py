"""Suite-wide hygiene: every app a test created has its connections closed afterwards."""

from __future__ import annotations

import contextlib
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
