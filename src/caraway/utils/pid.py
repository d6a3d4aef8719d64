"""This process's id, kept up to date across forks, without a system call per ask.

The publish path checks "am I still the process that opened this connection?" several
times per ``delay()``; ``os.getpid()`` is a system call each time (glibc caches nothing).
``os.register_at_fork`` refreshes the value in every child Python forks.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _refresh() -> None:
    global _pid  # noqa: PLW0603 - the per-process value, refreshed in a fork's child
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh)


def current_pid() -> int:
    """``os.getpid()``, read from memory."""
    return _pid
