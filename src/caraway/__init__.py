"""caraway: a distributed task queue for Python, wire-compatible with Celery 5."""

from __future__ import annotations

from caraway import exceptions, states
from caraway._version import __version__
from caraway.app import Caraway
from caraway.canvas import Signature, chain, chord, chunks, group, signature, xmap, xstarmap
from caraway.entities import Broadcast, Exchange, Queue
from caraway.result import AsyncResult, EagerResult, GroupResult
from caraway.shared import current_app, shared_task
from caraway.task import Task
from caraway.utils.log import get_task_logger

__all__ = [
    "AsyncResult",
    "Broadcast",
    "Caraway",
    "EagerResult",
    "Exchange",
    "GroupResult",
    "Queue",
    "Signature",
    "Task",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "exceptions",
    "get_task_logger",
    "group",
    "shared_task",
    "signature",
    "states",
    "xmap",
    "xstarmap",
]
