"""Helpers Celery users import from ``celery.utils`` (and ``celery.uuid``)."""

from __future__ import annotations

from caraway.utils.ids import new_id


def uuid() -> str:
    """A new task id: a random UUID as a string, as Celery makes them."""
    return new_id()


gen_unique_id = uuid
