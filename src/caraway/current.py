"""The current app, for ``shared_task``, ``current_app`` and handles built without ``app=``.

caraway keeps the app explicit everywhere else; this module is the one place that
remembers "the app most recently created", so that reusable libraries and Django
projects can declare tasks before any app exists, as they do with Celery. Apps are typed
``Any`` here: this module sits below every module that may name the app's type.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_current: Any = None
_apps: weakref.WeakSet[Any] = weakref.WeakSet()
#: callbacks run for every app, existing and future (``shared_task`` registrations)
_finalizers: list[Callable[[Any], Any]] = []
#: makes the app ``get_current_app()`` returns when none was created (set by caraway.app)
_default_factory: Callable[[], Any] | None = None


def set_current_app(app: Any) -> None:
    global _current  # noqa: PLW0603 - the one process-wide "current app"
    with _lock:
        _current = app


def register_app(app: Any) -> None:
    with _lock:
        _apps.add(app)
        finalizers = list(_finalizers)
    for finalize in finalizers:
        finalize(app)


def connect_on_app(callback: Callable[[Any], Any]) -> None:
    """Run ``callback`` for every app created so far and every app created later."""
    with _lock:
        _finalizers.append(callback)
        apps = list(_apps)
    for app in apps:
        callback(app)


def twins(app: Any) -> list[Any]:
    """Other live apps with the same main name.

    ``python -m proj.caraway worker`` runs the app module as ``__main__`` while the task
    modules import it as ``proj.caraway``: two app objects for one project. Celery shares
    every task between its apps for this reason; caraway shares them between apps of the
    same name only.
    """
    with _lock:
        return [other for other in _apps if other is not app and other.main == app.main]


def get_current_app() -> Any:
    """The most recently created app; creates a default one if there is none (as Celery)."""
    with _lock:
        app, factory = _current, _default_factory
    if app is None:
        if factory is None:
            raise RuntimeError("no caraway app exists in this process: create Caraway('proj')")
        app = factory()
    return app


def set_default_factory(factory: Callable[[], Any]) -> None:
    """Name what makes the default app (``Caraway('default')``, registered by caraway.app)."""
    global _default_factory  # noqa: PLW0603 - set once, by the module that defines the app
    with _lock:
        _default_factory = factory
