"""Loggers for task code: ``get_task_logger(__name__)``, as in ``celery.utils.log``.

A task logger's parent is the ``celery.task`` logger, to which the worker gives Celery's
``worker_task_log_format`` (``task_name[task_id]: message``); the formatter that fills
those two fields is the worker's (it knows the running task), :class:`TaskFormatter` here
reads them from a callable it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

#: the parent of every task logger: Celery's name, so logging configurations (and the
#: after_setup_task_logger signal's receivers) written for Celery find it
TASK_LOGGER = "celery.task"


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules: its lines carry the running task's name and id."""
    logger = logging.getLogger(name)
    parent = logging.getLogger(TASK_LOGGER)
    if logger is not parent and not _descends(logger, parent):
        logger.parent = parent
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def _descends(logger: logging.Logger, ancestor: logging.Logger) -> bool:
    found: logging.Logger | None = logger.parent
    while found is not None:
        if found is ancestor:
            return True
        found = found.parent
    return False


class TaskFormatter(logging.Formatter):
    """Fills ``task_name`` and ``task_id`` (``???`` outside a task), as Celery's does."""

    def __init__(
        self, fmt: str, current: Callable[[], tuple[str, str] | None], datefmt: str | None = None
    ) -> None:
        super().__init__(fmt, datefmt)
        self._current = current

    def format(self, record: logging.LogRecord) -> str:
        found = self._current()
        name, task_id = found if found is not None else ("???", "???")
        record.__dict__.setdefault("task_name", name)
        record.__dict__.setdefault("task_id", task_id)
        return super().format(record)
