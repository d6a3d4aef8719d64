"""Task: a registered function and the ways to call it (directly, eagerly, or by message).

``@app.task`` creates one :class:`Task` per function. Calling it runs the function here;
``delay``/``apply_async`` send a protocol v2 message through the app's publish path;
``apply`` runs it as a worker would (:mod:`caraway.execution`). What a task *is* (options,
hooks, ``self.request``) lives in :class:`caraway.taskbase.TaskBase`; this module adds the
Celery calling API on top.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Generic

from caraway import exceptions, execution, publish
from caraway.brokers.contracts import ChordStore
from caraway.canvas import Signature, chain, chord, chunks, group, xmap, xstarmap
from caraway.canvas.signature import stamps_as_headers
from caraway.events.dispatcher import EventDispatcher
from caraway.request import Request
from caraway.result import AsyncResult, EagerResult
from caraway.taskbase import TASK_DEFAULTS, AppLike, TaskBase, validate_options

if TYPE_CHECKING:
    from typing_extensions import ParamSpec, TypeVar

    #: the task function's parameters (any, for a bare ``Task``) and its return type
    P = ParamSpec("P", default=...)
    R = TypeVar("R", default=Any)
else:  # PEP 696 defaults are for the type checker; at run time plain ones do
    from typing import ParamSpec, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")


class Task(TaskBase, Generic[P, R]):
    """Base class of every task; subclass it and pass ``base=`` for shared behaviour.

    ``@app.task`` returns a ``Task[P, R]``: a type checker holds ``add(2, 2)`` and
    ``add.delay(2, 2)`` to the function's parameters, and ``add.delay(...).get()`` is an R.
    """

    #: Celery's ``except self.MaxRetriesExceededError`` and ``self.OperationalError`` (what
    #: a send that cannot reach the broker raises)
    MaxRetriesExceededError = exceptions.MaxRetriesExceededError
    OperationalError = exceptions.BrokerError

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
            """Run the function here and now (TaskBase.__call__ at run time)."""

    # -- calling by message ----------------------------------------------------------------
    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send a message asking a worker to run this task.

        Options as Celery's: ``countdown``, ``eta``, ``expires``, ``queue``, ``priority``,
        ``task_id``, ``headers``, ``serializer``, ``ignore_result``, ``time_limit``,
        ``soft_time_limit``, ``link``, ``link_error``, ``exchange``, ``routing_key``.
        Raises TypeError when the arguments do not fit the function, before sending.
        """
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if "stamped_headers" in options:
            options = stamps_as_headers(options)
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
    ) -> EagerResult[R]:
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
        if request.called_directly:
            # a plain function call has no message to send again: Celery raises the error
            if exc is not None:
                raise exc
            raise exceptions.Retry("Task can be retried", None)
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

    # -- events ------------------------------------------------------------------------------
    #: send_event() sends (Celery's switch); a base class may turn it off
    send_events = True

    def send_event(
        self, type_: str, retry: bool = True, retry_policy: Any = None, **fields: Any
    ) -> None:
        """Send a custom event about the running task (``task-progress``...), whatever
        ``-E`` says, as Celery does; monitors see it with ``uuid`` set to the task's id.

        ``retry``/``retry_policy`` are accepted: events are published off this thread and
        retried there.
        """
        if not self.send_events:
            return
        request = self.request
        self._dispatcher(request.hostname).send(type_, uuid=request.id, **fields)

    def _dispatcher(self, hostname: str | None) -> EventDispatcher:
        """One dispatcher per task object and process (its outbox is the process's)."""
        found = self.__dict__.get("_event_dispatcher")
        if found is None or found[0] != os.getpid():
            found = (os.getpid(), EventDispatcher(self.app, hostname=hostname))
            self.__dict__["_event_dispatcher"] = found
        dispatcher: EventDispatcher = found[1]
        return dispatcher

    # -- replacing ---------------------------------------------------------------------------
    def replace(self, sig: Signature) -> Any:
        """Stand ``sig`` in for this task: its result becomes this task's result.

        In a worker ``sig`` is sent (keeping this task's id for its final result, its
        place in a chord or group, the rest of its chain and its callbacks) and this run
        ends with :class:`~caraway.exceptions.Ignore`; eagerly it runs here and its value is
        returned, as Celery does. A group stands in as a chord over ``celery.accumulate``
        so that one result, the list, answers for it.
        """
        request = self.request
        if request.called_directly:
            raise exceptions.ImproperlyConfigured(
                f"{self.name}: replace() works only while a worker or apply() runs the task"
            )
        replacement = replacement_of(self, sig, request)
        return self.on_replace(replacement)

    def on_replace(self, sig: Signature) -> Any:
        """Send (or, eagerly, run) the replacement; override to look at it, then call super."""
        if self.request.is_eager:
            return sig.apply().get()
        sig.apply_async()
        raise exceptions.Ignore("Replaced by new task")

    def add_to_chord(self, sig: Signature, lazy: bool = False) -> Any:
        """Add ``sig`` to the chord this task is a header member of (the body waits for it)."""
        request = self.request
        if not request.chord or not request.group:
            raise ValueError("Current task is not member of any chord")
        backend = self.app.require_backend()
        if not isinstance(backend, ChordStore):
            raise exceptions.ImproperlyConfigured(
                "add_to_chord() needs a result backend that counts chords (redis, sqlite)"
            )
        sig = sig.clone()
        sig.set(group_id=request.group, group_index=request.group_index, chord=request.chord)
        sig.freeze()
        backend.chord_extend(request.group, 1)
        return sig if lazy else sig.apply_async()

    # -- results and signatures ------------------------------------------------------------
    def signature_from_request(
        self,
        request: Request | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **extra_options: Any,
    ) -> Signature:
        """A signature that calls this task again as ``request`` (the current one) did."""
        request = request or self.request
        options: dict[str, Any] = {"task_id": request.id, "link": request.callbacks}
        options.update(link_error=request.errbacks, group_id=request.group)
        options.update(group_index=request.group_index, chord=request.chord)
        options.update(extra_options)
        found = {key: value for key, value in options.items() if value is not None}
        return self.signature(
            request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            **found,
        )

    subtask_from_request = signature_from_request

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature[R]:
        sig: Signature[R] = Signature.from_task(self, args, kwargs, options)
        return sig

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature[R]:
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


def replacement_of(task: TaskBase, sig: Signature, request: Request) -> Signature:
    """``sig`` made to finish as ``request``'s task would: its id, chord place, chain, links."""
    if isinstance(sig, group):
        sig = chord(sig, Signature("celery.accumulate", kwargs={"index": 0}, app=task.app))
    else:
        sig = sig.clone()
    nesting = request.replaced_task_nesting + 1
    _finishing(sig).set(task_id=request.id)
    for callback in request.callbacks or ():
        sig.link(callback)
    for errback in request.errbacks or ():
        sig.link_error(errback)
    found: dict[str, Any] = {"group_id": request.group, "group_index": request.group_index}
    found["chord"] = request.chord
    join = {key: value for key, value in found.items() if value is not None}
    rest = [Signature.from_dict(step, app=task.app) for step in reversed(request.chain or [])]
    if rest:
        sig = chain(sig, *rest, app=task.app)  # the chain's end already carries any join
    elif join:
        sig.set(**join)
    headers = {**sig.options.get("headers", {}), "replaced_task_nesting": nesting}
    return sig.set(headers=headers)


def _finishing(sig: Signature) -> Signature:
    """The task whose result stands for ``sig``: a chain's last step, a chord's body."""
    if isinstance(sig, chain) and sig.tasks:
        return _finishing(sig.tasks[-1])
    if isinstance(sig, chord) and sig.body is not None:
        return _finishing(sig.body)
    return sig


def build_task(
    app: AppLike, fun: Callable[..., Any], base: type[Task], options: Mapping[str, Any]
) -> Task:
    """Create the Task instance ``@app.task`` registers for ``fun``.

    Options that are not task options become class attributes, as in Celery (custom
    attributes a base class reads); one that looks like a misspelt option warns.
    """
    _warn_near_misses(fun, options)
    options = dict(options)
    if options.pop("pydantic", False):
        fun = _pydantic_wrapper(fun, options)
    for key in ("pydantic_strict", "pydantic_context", "pydantic_dump_kwargs"):
        options.pop(key, None)
    name = options.get("name") or task_name(app, fun)
    attrs: dict[str, Any] = {
        key: value
        for key, value in options.items()
        if key not in ("name", "base") and value is not None
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


_INTERNALS = "Celery's worker internals have no caraway equivalent"
#: Celery's task options caraway does not take: the one value it accepts (what caraway
#: does anyway), and why; any other value stops the declaration, never silently ignored
_REFUSED_OPTIONS: dict[str, tuple[Any, str]] = {
    "acks_on_failure": (None, "use acks_on_failure_or_timeout"),
    "acks_on_timeout": (None, "use acks_on_failure_or_timeout"),
    "retry_on_worker_lost": (
        None,
        "use reject_on_worker_lost (with acks_late, caraway redelivers the task)",
    ),
    "store_eager_result": (
        False,
        "caraway keeps eager results in the calling process (EagerResult) and stores none",
    ),
    "resultrepr_maxsize": (1024, "caraway cuts result reprs in events at 1024 characters"),
    "trail": (True, "caraway always records a task's children with its result"),
    "Request": ("celery.worker.request:Request", _INTERNALS),
    "Strategy": ("celery.worker.strategy:default", _INTERNALS),
}


def _refuse_unsupported(fun: Callable[..., Any], options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        refused = _REFUSED_OPTIONS.get(key)
        if refused is not None and value != refused[0]:
            raise exceptions.ImproperlyConfigured(
                f"task {fun.__qualname__}: option {key}={value!r} is not supported by "
                f"caraway: {refused[1]} (caraway behaves as {key}={refused[0]!r})"
            )


def _warn_near_misses(fun: Callable[..., Any], options: Mapping[str, Any]) -> None:
    _refuse_unsupported(fun, options)
    known = [*TASK_DEFAULTS, "base", "pydantic", *_REFUSED_OPTIONS]
    for key in set(options) - set(known):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
        if close:
            warnings.warn(
                f"task {fun.__qualname__}: option {key!r} is not a task option, so it becomes "
                f"a plain class attribute; did you mean {close[0]!r}?",
                UserWarning,
                stacklevel=4,
            )


def _pydantic_wrapper(fun: Callable[..., Any], options: dict[str, Any]) -> Callable[..., Any]:
    """``@app.task(pydantic=True)``: arguments annotated with a pydantic model are validated
    from their dicts, and a model returned is dumped to a dict (Celery 5.5's contract)."""
    try:
        from pydantic import BaseModel  # noqa: PLC0415 - optional: only for pydantic=True
    except ImportError:
        raise exceptions.ImproperlyConfigured(
            f"task {fun.__qualname__} uses pydantic=True, but pydantic is not installed: "
            "pip install pydantic"
        ) from None
    strict = bool(options.get("pydantic_strict", False))
    context = options.get("pydantic_context")
    dump_kwargs = dict(options.get("pydantic_dump_kwargs") or {})
    signature = inspect.signature(fun)
    hints = typing_get_hints(fun)
    models = {
        name: hint
        for name, hint in hints.items()
        if name != "return" and isinstance(hint, type) and issubclass(hint, BaseModel)
    }

    @functools.wraps(fun)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name, model in models.items():
            value = bound.arguments.get(name)
            if name in bound.arguments and not isinstance(value, model):
                bound.arguments[name] = model.model_validate(value, strict=strict, context=context)
        result = fun(*bound.args, **bound.kwargs)
        if isinstance(result, BaseModel):
            return result.model_dump(**dump_kwargs)
        return result

    return wrapper


def typing_get_hints(fun: Callable[..., Any]) -> dict[str, Any]:
    """The function's resolved annotations (string annotations too); {} when unresolvable."""
    try:
        return typing.get_type_hints(fun)
    except Exception:
        return {}


def task_name(app: AppLike, fun: Callable[..., Any]) -> str:
    """``module.function``, with ``__main__`` replaced by the app's main name (as Celery)."""
    module = fun.__module__
    if module == "__main__" and app.main:
        module = app.main
    return f"{module}.{fun.__name__}"
