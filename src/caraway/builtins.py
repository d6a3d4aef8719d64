"""Celery's built-in task names, registered on an app so the messages Celery clients send run.

``celery.map``/``celery.starmap`` run a task over items inside one message; ``celery.group``,
``celery.chain`` and ``celery.chord`` apply a canvas carried in their kwargs (the worker
publishes them as chain steps). The one thing to know: every one accepts leading
positional arguments as *partial args* (a chain step's parent result) besides Celery's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.task import Task


def register_builtins(app: Caraway) -> None:
    """Register Celery's built-in tasks on ``app`` (once; later calls do nothing)."""
    if getattr(app, "_builtins_registered", False):
        return
    app._builtins_registered = True
    _register_batches(app)
    _register_canvases(app)
    _register_maintenance(app)


def _task_of(app: Caraway, value: Any) -> Task:
    from caraway.canvas import Signature

    return app.get_task(Signature.from_dict(value, app=app).name)


def _register_batches(app: Caraway) -> None:
    @app.task(name="celery.map", typing=False)
    def xmap(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
        run = _task_of(app, task)
        return [run(item) for item in it]

    @app.task(name="celery.starmap", typing=False)
    def xstarmap(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
        run = _task_of(app, task)
        return [run(*item) for item in it]

    @app.task(name="celery.chunks", typing=False)
    def chunks(task: Mapping[str, Any], it: Iterable[Any], n: int) -> Any:
        from caraway.canvas import chunks as make_chunks

        return make_chunks(task, it, n, app=app).apply_async().as_tuple()

    @app.task(name="celery.accumulate", typing=False)
    def accumulate(*args: Any, **kwargs: Any) -> Any:
        # A chord body that hands its header results on unchanged (index picks one arg).
        index = kwargs.get("index")
        return args[index] if index is not None else args


def _register_canvases(app: Caraway) -> None:
    @app.task(name="celery.group", bind=True, typing=False)
    def group(
        self: Task,
        *partial: Any,
        tasks: list[Any],
        group_id: str | None = None,
        partial_args: Iterable[Any] = (),
        **_: Any,
    ) -> Any:
        from caraway.canvas import group as make_group

        members = make_group(tasks, app=app)
        gid = group_id or self.request.id
        return members.apply_async([*partial, *partial_args], task_id=gid).as_tuple()

    @app.task(name="celery.chain", typing=False)
    def chain(*partial: Any, tasks: list[Any], **_: Any) -> Any:
        from caraway.canvas import chain as make_chain

        return make_chain(tasks, app=app).apply_async(partial).id

    @app.task(name="celery.chord", typing=False)
    def chord(
        *partial: Any,
        header: Any,
        body: Any,
        partial_args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        from caraway.canvas import chord as make_chord

        applied = make_chord(header, body, kwargs=kwargs, app=app)
        return applied.apply_async([*partial, *partial_args]).id


def _register_maintenance(app: Caraway) -> None:
    @app.task(name="celery.backend_cleanup", typing=False)
    def backend_cleanup() -> int:
        backend = app.backend
        return backend.cleanup() if backend is not None else 0

    @app.task(name="celery.chord_unlock", bind=True, typing=False, max_retries=None)
    def chord_unlock(
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
        from caraway.canvas import Signature
        from caraway.protocol.results import parse_result_tuple

        ids = [parse_result_tuple(item).id for item in result or ()]
        members = app.GroupResult(group_id, [app.AsyncResult(task_id) for task_id in ids])
        if not members.ready():
            raise self.retry(countdown=interval or 1.0, max_retries=max_retries)
        Signature.from_dict(callback, app=app).apply_async((members.join(),))
