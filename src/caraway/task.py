"""Task: a registered function and the ways to call it (directly, eagerly, or by message).

``@app.task`` creates one :class:`Task` per function. Calling it runs the function here;
``delay``/``apply_async`` send a protocol v2 message through the app's publish path;
``apply`` runs it as a worker would (:mod:`caraway.execution`). What a task *is* (options,
hooks, ``self.request``) lives in :class:`caraway.taskbase.TaskBase`; this module adds the
Celery calling API on top.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from caraway import exceptions, execution, publish
from caraway.canvas import Signature, chunks, xmap, xstarmap
from caraway.result import AsyncResult, EagerResult
from caraway.taskbase import TASK_DEFAULTS, AppLike, TaskBase, validate_options


class Task(TaskBase):
    """Base class of every task; subclass it and pass ``base=`` for shared behaviour."""

    # -- calling by message ----------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task with these arguments; shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a message asking a worker to run this task.

        Options as Celery's: ``countdown``, ``eta``, ``expires``, ``queue``, ``priority``,
        ``task_id``, ``headers``, ``serializer``, ``ignore_result``, ``time_limit``,
        ``soft_time_limit``, ``link``, ``link_error``, ``exchange``, ``routing_key``.
        Raises TypeError when the arguments do not fit the function, before sending.
        """
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if self.typing:
            self.check_arguments(args, kwargs)
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return self.app.send_task(self.name, args, kwargs, _task=self, **options)

    # -- calling by message from asyncio code ----------------------------------------------
    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay`` for asyncio code: ``await add.adelay(2, 2)`` never blocks the loop."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """``apply_async`` for asyncio code: same options, same checks, same message; the
        broker round trip happens on the app's sender thread (``app.asend``). In eager
        mode the task runs there, so a long one does not hold up the loop either."""
        # the sender thread runs apply_async itself (checks, build, eager run) in this
        # call's context; only the loop's side differs
        result: AsyncResult = await self.app.asend(
            functools.partial(self.apply_async, args, kwargs, **options)
        )
        return result

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here, as a worker would (hooks, retries, callbacks), no broker."""
        return execution.run_eagerly(self, tuple(args or ()), dict(kwargs or {}), options)

    # -- retrying --------------------------------------------------------------------------
    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> exceptions.Retry:
        """Ask for this task to run again later and stop the current run.

        Raises :class:`~caraway.exceptions.Retry` (the worker records RETRY and publishes
        the message that runs the task again with the run's other effects), or ``exc`` /
        :class:`~caraway.exceptions.MaxRetriesExceededError` when retries are used up. With
        ``throw=False`` the Retry is returned and the run goes on; the message is still sent
        when it ends, as Celery sends it.
        """
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and not isinstance(limit, int):
            raise TypeError(f"max_retries must be an int or None, not {limit!r}")
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise exceptions.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{tuple(request.args)} "
                f"kwargs:{request.kwargs}: max_retries={limit} reached"
            )
        now = datetime.now(timezone.utc)
        when = _retry_at(eta, countdown, self.default_retry_delay, now)
        signal = exceptions.Retry(exc=exc, when=max(0.0, (when - now).total_seconds()))
        if not request.is_eager:
            again = publish.retry(
                self, request, args=args, kwargs=kwargs, when=when, queue=options.get("queue")
            )
            request.resends.append(again)
        if throw:
            raise signal
        return signal

    # -- results and signatures ------------------------------------------------------------
    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        return Signature.from_task(self, args, kwargs, options)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs, immutable=True)

    subtask = signature

    def map(self, it: Iterable[Any]) -> xmap:
        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> xstarmap:
        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Any], n: int) -> chunks:
        return chunks(self.s(), it, n, app=self.app)

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"


def _retry_at(eta: Any, countdown: Any, default: float, now: datetime) -> datetime:
    """When the retry is due; TypeError/ValueError naming a bad ``eta`` or ``countdown``."""
    if eta is not None:
        if not isinstance(eta, datetime):
            raise TypeError(
                f"retry eta must be a datetime, not {eta!r}; use countdown= for seconds"
            )
        # a naive eta is UTC, as apply_async reads it
        return eta if eta.tzinfo is not None else eta.replace(tzinfo=timezone.utc)
    if countdown is None:
        countdown = default
    if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
        raise TypeError(f"retry countdown must be a number of seconds, not {countdown!r}")
    if countdown < 0:
        raise ValueError(f"retry countdown must be a non-negative number, not {countdown!r}")
    return now + timedelta(seconds=float(countdown))


def build_task(
    app: AppLike, fun: Callable[..., Any], base: type[Task], options: Mapping[str, Any]
) -> Task:
    """Create the Task instance ``@app.task`` registers for ``fun``."""
    unknown = set(options) - set(TASK_DEFAULTS) - {"base"}
    if unknown:
        raise TypeError(
            f"unknown task option(s) {sorted(unknown)} for {fun.__qualname__}; "
            f"known: {sorted(TASK_DEFAULTS)}"
        )
    name = options.get("name") or task_name(app, fun)
    attrs: dict[str, Any] = {
        key: value for key, value in options.items() if key != "name" and value is not None
    }
    attrs.update(
        name=name,
        app=app,
        _fun=staticmethod(fun),
        __module__=fun.__module__,
        __doc__=fun.__doc__,
        __qualname__=fun.__qualname__,
        __wrapped__=staticmethod(fun),
    )
    validate_options(name, attrs)
    cls = type(fun.__name__, (base,), attrs)
    task: Task = cls()
    return task


def task_name(app: AppLike, fun: Callable[..., Any]) -> str:
    """``module.function``, with ``__main__`` replaced by the app's main name (as Celery)."""
    module = fun.__module__
    if module == "__main__" and app.main:
        module = app.main
    return f"{module}.{fun.__name__}"
