"""caraway: a distributed task queue for Python, wire-compatible with Celery 5."""

from __future__ import annotations

from caraway import exceptions, states
from caraway._version import __version__
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

__all__ = [
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
    "xmap",
    "xstarmap",
]
