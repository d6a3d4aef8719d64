"""Celery's built-in task names, so the messages Celery clients send run on caraway workers.

``celery.map``/``celery.starmap`` run a task over items inside one message; ``celery.group``,
``celery.chain`` and ``celery.chord`` apply a canvas carried in their kwargs (the worker
publishes them as chain steps). Every app registers :data:`BUILTINS`; each is bound, so it
reaches its app as ``self.app``. The one thing to know: every one accepts leading
positional arguments as *partial args* (a chain step's parent result) besides Celery's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from caraway.canvas import Signature, chain, chord, chunks, group
from caraway.protocol.results import parse_result_tuple
from caraway.result import AsyncResult, GroupResult
from caraway.task import Task
from caraway.taskbase import TaskBase


def _task_of(self: Task, value: Any) -> TaskBase:
    return self.app.get_task(Signature.from_dict(value, app=self.app).name)


def _map(self: Task, task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
    run = _task_of(self, task)
    return [run(item) for item in it]


def _starmap(self: Task, task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
    run = _task_of(self, task)
    return [run(*item) for item in it]


def _chunks(self: Task, task: Mapping[str, Any], it: Iterable[Any], n: int) -> Any:
    return chunks(task, it, n, app=self.app).apply_async().as_tuple()


def _accumulate(self: Task, *args: Any, **kwargs: Any) -> Any:
    # A chord body that hands its header results on unchanged (index picks one arg).
    index = kwargs.get("index")
    return args[index] if index is not None else args


def _group(
    self: Task,
    *partial: Any,
    tasks: list[Any],
    group_id: str | None = None,
    partial_args: Iterable[Any] = (),
    **_: Any,
) -> Any:
    members = group(tasks, app=self.app)
    gid = group_id or self.request.id
    return members.apply_async([*partial, *partial_args], task_id=gid).as_tuple()


def _chain(self: Task, *partial: Any, tasks: list[Any], **_: Any) -> Any:
    return chain(tasks, app=self.app).apply_async(partial).id


def _chord(
    self: Task,
    *partial: Any,
    header: Any,
    body: Any,
    partial_args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **_: Any,
) -> Any:
    applied = chord(header, body, kwargs=kwargs, app=self.app)
    return applied.apply_async([*partial, *partial_args]).id


def _backend_cleanup(self: Task) -> int:
    backend = self.app.backend
    return backend.cleanup() if backend is not None else 0


def _chord_unlock(
    self: Task,
    group_id: str,
    callback: Mapping[str, Any],
    interval: float | None = None,
    max_retries: int | None = None,
    result: list[Any] | None = None,
    **_: Any,
) -> None:
    # Celery's polling join for backends that cannot count; caraway never sends it, but
    # a Celery client on such a backend does.
    ids = [parse_result_tuple(item).id for item in result or ()]
    members = GroupResult(group_id, [AsyncResult(task_id, app=self.app) for task_id in ids])
    if not members.ready():
        raise self.retry(countdown=interval or 1.0, max_retries=max_retries)
    Signature.from_dict(callback, app=self.app).apply_async((members.join(),))


#: (name, function, options) of every built-in task; each is registered with bind=True
BUILTINS: tuple[tuple[str, Callable[..., Any], dict[str, Any]], ...] = (
    ("celery.map", _map, {}),
    ("celery.starmap", _starmap, {}),
    ("celery.chunks", _chunks, {}),
    ("celery.accumulate", _accumulate, {}),
    ("celery.group", _group, {}),
    ("celery.chain", _chain, {}),
    ("celery.chord", _chord, {}),
    ("celery.backend_cleanup", _backend_cleanup, {}),
    ("celery.chord_unlock", _chord_unlock, {"max_retries": None}),
)
