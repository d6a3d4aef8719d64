"""The current app, for ``shared_task`` and ``current_app`` (Celery's library idioms).

caraway keeps the app explicit everywhere else; this module is the one place that
remembers "the app most recently created", so that reusable libraries and Django
projects can declare tasks before any app exists, as they do with Celery.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caraway.app import Caraway

_lock = threading.Lock()
_current: Caraway | None = None
_apps: weakref.WeakSet[Caraway] = weakref.WeakSet()
#: callbacks run for every app, existing and future (``shared_task`` registrations)
_finalizers: list[Callable[[Caraway], Any]] = []


def set_current_app(app: Caraway) -> None:
    global _current  # noqa: PLW0603 - the one process-wide "current app"
    with _lock:
        _current = app


def register_app(app: Caraway) -> None:
    with _lock:
        _apps.add(app)
        finalizers = list(_finalizers)
    for finalize in finalizers:
        finalize(app)


def connect_on_app(callback: Callable[[Caraway], Any]) -> None:
    """Run ``callback`` for every app created so far and every app created later."""
    with _lock:
        _finalizers.append(callback)
        apps = list(_apps)
    for app in apps:
        callback(app)


def twins(app: Caraway) -> list[Caraway]:
    """Other live apps with the same main name.

    ``python -m proj.caraway worker`` runs the app module as ``__main__`` while the task
    modules import it as ``proj.caraway``: two app objects for one project. Celery shares
    every task between its apps for this reason; caraway shares them between apps of the
    same name only.
    """
    with _lock:
        return [other for other in _apps if other is not app and other.main == app.main]


def get_current_app() -> Caraway:
    """The most recently created app; creates a default one if there is none (as Celery)."""
    with _lock:
        app = _current
    if app is None:
        from caraway.app import Caraway

        app = Caraway("default")
    return app
