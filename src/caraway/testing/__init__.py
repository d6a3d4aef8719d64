"""Testing caraway apps: a test app on the in-process or SQLite broker, and a real worker
on a thread (``start_worker``), for pytest (the plugin in :mod:`caraway.testing.plugin`,
registered by entry point) and for any other test runner.

Nothing here mocks the worker: ``start_worker`` runs the consumer loop a ``caraway
worker`` node runs, on a thread of the test process, and stops and joins it on exit.
"""

from __future__ import annotations

from caraway.testing.app import DEFAULT_TEST_CONFIG, TestApp
from caraway.testing.worker import TestWorker, start_worker

__all__ = ["DEFAULT_TEST_CONFIG", "TestApp", "TestWorker", "start_worker"]
