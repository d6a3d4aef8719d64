"""The Django fix-up: what Celery's does, for a caraway app created in a Django project.

``Caraway()`` installs it when ``DJANGO_SETTINGS_MODULE`` is set and Django imports. It
makes :class:`DjangoTask` the task base, sets Django up before the app imports task
modules, lists the installed apps for ``autodiscover_tasks()``, and minds database
connections in workers. The one thing to know: a forked child never closes (nor uses)
the connections it inherited, since closing talks to the server over the parent's socket;
it drops them, and each task then starts and ends with Django's ``close_old_connections``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from caraway import signals
from caraway.contrib.django.task import DjangoTask
from caraway.task import Task

logger = logging.getLogger("caraway.django")

#: connections a forked child inherited: kept referenced and never closed, so no
#: finalizer ever sends the server a goodbye on the parent's session
_INHERITED: list[Any] = []


class _Configurable(Protocol):
    Task: type[Task]


def fixup(app: _Configurable, env: str = "DJANGO_SETTINGS_MODULE") -> DjangoFixup | None:
    """The app's Django fix-up, installed, when ``env`` names a settings module; else None."""
    if not os.environ.get(env):
        return None
    try:
        import django  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        logger.warning(
            "%s is set but Django is not installed; the Django fix-ups are not applied "
            "(pip install 'caraway[django]')",
            env,
        )
        return None
    return DjangoFixup(app).install()


class DjangoFixup:
    """One app's Django hooks; the worker's signal receivers are shared by every app."""

    def __init__(self, app: _Configurable) -> None:
        self.app = app

    def install(self) -> DjangoFixup:
        if self.app.Task is Task:  # a task_cls the user chose is left alone, as in Celery
            self.app.Task = DjangoTask
        signals.worker_process_init.connect(_drop_inherited_connections)
        signals.task_prerun.connect(_before_task)
        signals.task_postrun.connect(_after_task)
        signals.worker_ready.connect(_warn_if_debug)
        return self

    def on_import_modules(self) -> None:
        """Before the app imports task modules: Django set up, so models import."""
        setup_django()

    def autodiscover_tasks(self) -> list[str]:
        """The packages of every installed Django app, for ``autodiscover_tasks()``."""
        setup_django()
        from django.apps import apps  # noqa: PLC0415 - optional dependency

        return [config.name for config in apps.get_app_configs()]


def setup_django() -> None:
    """``django.setup()`` unless Django is set up (or setting itself up) already."""
    import django  # noqa: PLC0415 - optional dependency
    from django.apps import apps  # noqa: PLC0415 - optional dependency

    if not apps.ready and not apps.loading:
        django.setup()


def _drop_inherited_connections(**_: Any) -> None:
    """In a forked child: forget the parent's connections (and caches) without I/O on them.

    Django opens new ones on first use; the parent's stay usable by the parent.
    """
    from django.conf import settings  # noqa: PLC0415 - optional dependency
    from django.db import connections  # noqa: PLC0415 - optional dependency

    if not settings.configured:
        return
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _INHERITED.append(conn.connection)
            conn.connection = None
        conn.close()  # with no connection: only resets the wrapper's state
    _close_caches()


def _before_task(task: Any = None, **_: Any) -> None:
    if _minds(task):
        _close_old_connections()


def _after_task(task: Any = None, **_: Any) -> None:
    if _minds(task):
        _close_old_connections()
        _close_caches()


def _minds(task: Any) -> bool:
    """Whether to mind connections around this run: not for an eager run (the caller's own
    code path, whose connections are the caller's), nor before Django is configured (the
    receivers are process-wide; another app's tasks may run in a process with no Django)."""
    from django.conf import settings  # noqa: PLC0415 - optional dependency

    request = getattr(task, "request", None)
    return settings.configured and not getattr(request, "is_eager", False)


def _close_old_connections() -> None:
    """Close this thread's connections that are broken or past ``CONN_MAX_AGE`` (never one
    inside ``atomic()``), as Django does around each request."""
    from django.db import close_old_connections  # noqa: PLC0415 - optional dependency

    close_old_connections()


def _close_caches() -> None:
    from django.core.cache import caches  # noqa: PLC0415 - optional dependency

    for cache in caches.all(initialized_only=True):
        cache.close()


def _warn_if_debug(**_: Any) -> None:
    from django.conf import settings  # noqa: PLC0415 - optional dependency

    if settings.DEBUG:
        logger.warning(
            "settings.DEBUG is on: Django keeps every query in memory, so a worker's memory "
            "grows without end; never run a worker with DEBUG in production"
        )
