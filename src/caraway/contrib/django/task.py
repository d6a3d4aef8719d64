"""DjangoTask: the task base of an app in a Django project (Celery 5.4's, same methods).

``delay_on_commit``/``apply_async_on_commit`` hand the send to Django's
``transaction.on_commit``: inside ``transaction.atomic()`` the message goes out only if
and when the transaction commits (never for a rollback), so a worker cannot run the task
before the rows it reads are visible. Outside a transaction they send at once.
"""

from __future__ import annotations

import functools
from typing import Any

from caraway.task import Task


class DjangoTask(Task):
    """Task with sends that wait for the surrounding database transaction."""

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay(*args, **kwargs)`` once the current transaction commits.

        Returns None, as Celery's does: the message does not exist yet, and will not if the
        transaction rolls back. Send with ``apply_async_on_commit(task_id=...)`` to know
        the id in advance.
        """
        _on_commit(functools.partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``apply_async(*args, **kwargs)`` once the current transaction commits."""
        _on_commit(functools.partial(self.apply_async, *args, **kwargs))


def _on_commit(send: functools.partial[Any]) -> None:
    # optional dependency: this base is installed only where Django is
    from django.db import transaction  # noqa: PLC0415

    transaction.on_commit(send)
