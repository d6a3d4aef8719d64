"""Helpers Celery users import from ``celery.utils`` (and ``celery.uuid``)."""

from __future__ import annotations

import uuid as _uuid


def uuid() -> str:
    """A new task id: a random UUID as a string, as Celery makes them."""
    return str(_uuid.uuid4())


gen_unique_id = uuid
