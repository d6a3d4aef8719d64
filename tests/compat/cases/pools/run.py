"""A gevent pool, from the user guide's "Concurrency" chapter: I/O-bound tasks wait together."""

import time

from celery import group
from proj import nap

started = time.monotonic()
threads = group(nap.s(1) for _ in range(10)).delay().get(timeout=30)
print("ten one-second naps together", time.monotonic() - started < 5)
print("on one OS thread", len(set(threads)) == 1)
