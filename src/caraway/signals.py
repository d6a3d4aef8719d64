"""Hooks for user code: ``@task_prerun.connect`` and friends, as in ``celery.signals``.

A signal is a plain registry of receivers. Errors in a receiver are logged and do not
change the task's outcome (Celery's behaviour), except where a hook documents otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("caraway.signals")

Receiver = Callable[..., Any]


class Signal:
    """A named hook; receivers are called with ``sender=`` and keyword arguments."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: list[Receiver] = []
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver | None = None, **options: Any) -> Any:
        """Register ``receiver``; usable as ``@signal.connect`` or ``signal.connect(fn)``."""

        def register(function: Receiver) -> Receiver:
            with self._lock:
                if function not in self._receivers:
                    self._receivers.append(function)
            return function

        if receiver is None:
            return register
        return register(receiver)

    def disconnect(self, receiver: Receiver) -> None:
        with self._lock:
            if receiver in self._receivers:
                self._receivers.remove(receiver)

    @property
    def receivers(self) -> list[Receiver]:
        return list(self._receivers)

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver; returns (receiver, result or exception) pairs."""
        if not self._receivers:
            return []
        replies: list[tuple[Receiver, Any]] = []
        for receiver in list(self._receivers):
            try:
                replies.append((receiver, receiver(sender=sender, signal=self, **named)))
            except Exception as exc:
                logger.exception("signal %s: receiver %r raised", self.name, receiver)
                replies.append((receiver, exc))
        return replies

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


#: sent by the publishing process around each task message, as Celery does: ``sender`` is
#: the task name, ``headers`` the message's own headers (what receivers add is sent)
before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_received = Signal("task_received")
worker_process_init = Signal("worker_process_init")
worker_init = Signal("worker_init")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_process_shutdown = Signal("worker_process_shutdown")

__all__ = [
    "Signal",
    "after_task_publish",
    "before_task_publish",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_retry",
    "task_revoked",
    "task_success",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
]
