"""caraway: a distributed task queue for Python, wire-compatible with Celery 5."""

from __future__ import annotations

from caraway import current, exceptions, states
from caraway._version import VERSION, __version__, version_info, version_info_t
from caraway.app import Caraway
from caraway.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    subtask,
    xmap,
    xstarmap,
)
from caraway.entities import Broadcast, Exchange, Queue
from caraway.result import AsyncResult, EagerResult, GroupResult, ResultSet
from caraway.shared import current_app, current_task, shared_task
from caraway.task import Task
from caraway.utils import uuid
from caraway.utils.log import get_task_logger


def bugreport(app: Caraway | None = None) -> str:
    """Versions, platform and settings for a bug report (Celery's ``celery.bugreport``):
    ``app``'s, else the current app's (passwords masked)."""
    return (app or current.get_current_app()).bugreport()


__all__ = [
    "VERSION",
    "AsyncResult",
    "Broadcast",
    "Caraway",
    "EagerResult",
    "Exchange",
    "GroupResult",
    "Queue",
    "ResultSet",
    "Signature",
    "Task",
    "__version__",
    "bugreport",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "exceptions",
    "get_task_logger",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "states",
    "subtask",
    "uuid",
    "version_info",
    "version_info_t",
    "xmap",
    "xstarmap",
]
