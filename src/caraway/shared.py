"""``shared_task`` and ``current_app``: tasks and app access for reusable libraries.

A shared task is registered on every app, present and future; the object returned
behaves as the current app's task, so ``from lib.tasks import add; add.delay(2, 2)``
works whichever app the process created.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from caraway import current
from caraway.app import Caraway
from caraway.request import current_request
from caraway.task import task_name
from caraway.taskbase import TaskBase


class _TaskProxy:
    """Stands for the shared task on whichever app is current, under the name that app
    gives it (``name=``, else its ``gen_task_name``, as Celery's proxy looks it up)."""

    def __init__(self, name: str | None, fun: Callable[..., Any]) -> None:
        self._name = name
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__
        self.__name__ = fun.__name__

    def _task(self) -> TaskBase:
        app = current.get_current_app()
        task: TaskBase = app.tasks[self._name or task_name(app, self.__wrapped__)]
        return task

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._task(), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        fun = self.__wrapped__
        return f"<@shared_task: {self._name or f'{fun.__module__}.{fun.__name__}'}>"


def shared_task(*args: Any, **options: Any) -> Any:
    """Declare a task for every app: ``@shared_task`` or ``@shared_task(bind=True)``."""

    def create(fun: Callable[..., Any]) -> Any:
        explicit = options.get("name")

        def register(app: Caraway) -> None:
            if (explicit or task_name(app, fun)) not in app._tasks:
                app.task(**options)(fun)

        current.connect_on_app(register)
        return _TaskProxy(explicit, fun)

    if len(args) == 1 and callable(args[0]) and not options:
        return create(args[0])
    return create


class _CurrentApp:
    """``current_app``: attribute access goes to the most recently created app."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(current.get_current_app(), attribute)

    def __repr__(self) -> str:
        return f"<current_app: {current.get_current_app()!r}>"


current_app: Any = _CurrentApp()


class _CurrentTask:
    """``current_task``: the task running in this thread or asyncio task (falsy if none)."""

    def _task(self) -> TaskBase | None:
        request = current_request()
        if request is None:
            return None
        found: TaskBase | None = request.running_task
        return found

    def __bool__(self) -> bool:
        return self._task() is not None

    def __getattr__(self, attribute: str) -> Any:
        task = self._task()
        if task is None:
            raise AttributeError(f"no task is running here, so current_task has no {attribute!r}")
        return getattr(task, attribute)

    def __repr__(self) -> str:
        return f"<current_task: {self._task()!r}>"


current_task: Any = _CurrentTask()
