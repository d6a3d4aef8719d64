"""Loggers for task code: ``get_task_logger(__name__)``, as in ``celery.utils.log``."""

from __future__ import annotations

import logging


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules; its records propagate to the worker's log."""
    return logging.getLogger(name)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
