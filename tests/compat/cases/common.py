"""Shared by every corpus project's main.py: wait until a worker answers a ping.

Written against Celery's API; the harness renames the imports for the caraway run.
"""

import time


def wait_for_worker(app, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise SystemExit("no worker answered a ping")
