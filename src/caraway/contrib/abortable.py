"""Abortable tasks, as Celery's ``celery.contrib.abortable``: a caller asks a running task to
stop, and the task, checking at points of its choosing, stops cleanly.

The request travels through the result store: ``AbortableAsyncResult.abort()`` stores the
state ``ABORTED`` (the document Celery writes, so either side can abort the other's tasks),
and ``AbortableTask.is_aborted()`` reads it. Nothing is interrupted: a task that never asks
runs to its end, and its own final state replaces ``ABORTED``. Needs a result backend.

    from caraway.contrib.abortable import AbortableTask

    @app.task(bind=True, base=AbortableTask)
    def long_task(self):
        for step in range(1000):
            if self.is_aborted():
                return "aborted"
            ...

    result = long_task.delay()
    result.abort()
"""

from __future__ import annotations

from typing import Any

from caraway.result import AsyncResult
from caraway.task import Task
from caraway.taskbase import store_state

__all__ = ["ABORTED", "AbortableAsyncResult", "AbortableTask"]

#: the state ``abort()`` stores; not a ready state, so ``get()`` waits for the task's own
ABORTED = "ABORTED"


class AbortableAsyncResult(AsyncResult[Any]):
    """A result whose task can be asked to stop."""

    def is_aborted(self) -> bool:
        """True once :meth:`abort` was called (and the task has not finished since)."""
        return self.state == ABORTED

    def abort(self) -> None:
        """Ask the task to stop: it sees it the next time it calls ``is_aborted()``."""
        store_state(self.app, self.id, ABORTED, None)


class AbortableTask(Task[Any, Any]):
    """A task base whose runs can be aborted through their result (``base=AbortableTask``)."""

    def AsyncResult(self, task_id: str) -> AbortableAsyncResult:
        return AbortableAsyncResult(task_id, app=self.app, task_name=self.name)

    def is_aborted(self, **kwargs: Any) -> bool:
        """Whether this run (or ``task_id=``'s) was asked to stop: poll it in long loops."""
        task_id = kwargs.get("task_id") or self.request.id
        if task_id is None:
            return False
        return self.AsyncResult(task_id).is_aborted()
