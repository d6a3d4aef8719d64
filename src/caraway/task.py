"""Task: a registered function and the ways to call it (directly, eagerly, or by message).

A ``Task`` instance is created by ``@app.task`` for each function. Calling it runs the
function in this process; ``delay``/``apply_async`` build a protocol v2 message and hand
it to the app's producer. ``self.request`` (for ``bind=True`` tasks) is the context of the
call being run, kept per thread so a threads pool can run one task many times at once.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from caraway import exceptions

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.result import AsyncResult, EagerResult


@dataclass
class Request:
    """What a running task knows about its own call (Celery's ``self.request``)."""

    id: str | None = None
    task: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    is_eager: bool = False
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    root_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    eta: datetime | None = None
    expires: datetime | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    origin: str | None = None
    timelimit: tuple[float | None, float | None] = (None, None)
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    ignore_result: bool = False
    #: the message as received, so ``retry()`` can re-send it faithfully
    message: Any = None


#: the requests being run, per thread and per asyncio task (a ContextVar gives both), keyed
#: by task object so a task calling another task directly sees its own request
_REQUESTS: ContextVar[tuple[tuple[int, Request], ...]] = ContextVar("caraway_requests", default=())


#: Options a task declaration accepts besides the function itself, with their defaults.
TASK_DEFAULTS: dict[str, Any] = {
    "name": None,
    "bind": False,
    "typing": True,
    "track_started": None,
    "ignore_result": None,
    "store_errors_even_if_ignored": None,
    "serializer": None,
    "queue": None,
    "exchange": None,
    "routing_key": None,
    "priority": None,
    "acks_late": None,
    "acks_on_failure_or_timeout": None,
    "reject_on_worker_lost": None,
    "time_limit": None,
    "soft_time_limit": None,
    "rate_limit": None,
    "expires": None,
    "max_retries": 3,
    "default_retry_delay": 180,
    "autoretry_for": (),
    "dont_autoretry_for": (),
    "retry_kwargs": {},
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "throws": (),
    "shadow_name": None,
}


class Task:
    """Base class of every task; subclass it and pass ``base=`` for shared behaviour."""

    name: str = ""
    app: Caraway
    typing: bool = True
    bind: bool = False
    track_started: bool | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    serializer: str | None = None
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    acks_late: bool | None = None
    acks_on_failure_or_timeout: bool | None = None
    reject_on_worker_lost: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    expires: float | datetime | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 180
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    throws: tuple[type[BaseException], ...] = ()
    shadow_name: Callable[..., str] | None = None

    _fun: Callable[..., Any] | None = None

    def __init__(self) -> None:
        self._key = id(self)

    # -- what runs -------------------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task body; ``@app.task`` replaces it with the decorated function."""
        if self._fun is None:
            raise NotImplementedError(f"task {self.name!r} defines no run()")
        if self.bind:
            return self._fun(self, *args, **kwargs)
        return self._fun(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here and now, like calling it directly (no message sent)."""
        self.push_request(Request(id=None, task=self.name, args=list(args), kwargs=kwargs))
        try:
            return self.run(*args, **kwargs)
        finally:
            self.pop_request()

    # -- request context -------------------------------------------------------------------
    @property
    def request(self) -> Request:
        for key, request in reversed(_REQUESTS.get()):
            if key == self._key:
                return request
        return Request()

    def push_request(self, request: Request) -> None:
        _REQUESTS.set((*_REQUESTS.get(), (self._key, request)))

    def pop_request(self) -> None:
        stack = _REQUESTS.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] == self._key:
                _REQUESTS.set(stack[:index] + stack[index + 1 :])
                return

    # -- hooks run by the worker (override in a base class) --------------------------------
    def before_start(self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Called before the task body runs."""

    def on_success(
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        """Called after the task body returned."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called after the task body raised."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called when the task asked to be retried."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called after the outcome was stored, whatever it was."""

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
            return self.apply(args, kwargs, task_id=options.get("task_id"), **options)
        return self.app.send_task(self.name, args, kwargs, _task=self, **options)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here, as a worker would (hooks, retries, result object), no broker."""
        from caraway.worker.eager import run_eagerly

        return run_eagerly(self, tuple(args or ()), dict(kwargs or {}), options)

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError, as calling the function would, when the arguments do not fit."""
        signature = self._signature()
        if signature is None:
            return
        if not kwargs and len(args) == self.__dict__.get("_plain_arity"):
            return  # f(a, b) called with two positional arguments: nothing to bind
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    def _signature(self) -> inspect.Signature | None:
        cached: inspect.Signature | None = self.__dict__.get("_cached_signature")
        if cached is not None:
            return cached
        fun = self._fun if self._fun is not None else self.run
        try:
            signature = inspect.signature(fun)
        except (TypeError, ValueError):
            return None
        if self.bind and self._fun is not None:
            params = list(signature.parameters.values())[1:]
            signature = signature.replace(parameters=params)
        self.__dict__["_cached_signature"] = signature
        plain = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY
        if all(p.kind in plain for p in signature.parameters.values()):
            # every call with exactly this many positional arguments fits
            self.__dict__["_plain_arity"] = len(signature.parameters)
        return signature

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
        """Re-send this task to run again later and stop the current run.

        Raises :class:`~caraway.exceptions.Retry` (the worker records RETRY), or ``exc``
        / :class:`~caraway.exceptions.MaxRetriesExceededError` when retries are used up.
        """
        from caraway.worker.retry import retry_task

        return retry_task(
            self,
            args=args,
            kwargs=kwargs,
            exc=exc,
            throw=throw,
            eta=eta,
            countdown=countdown,
            max_retries=max_retries,
            options=options,
        )

    def backoff_delay(self, retries: int) -> float:
        """Delay before retry number ``retries + 1`` under ``retry_backoff`` (exponential)."""
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay: float = min(factor * (2**retries), float(self.retry_backoff_max))
        if self.retry_jitter:
            delay = random.uniform(0, delay)
        return delay

    # -- results and signatures ------------------------------------------------------------
    def AsyncResult(self, task_id: str) -> AsyncResult:
        return self.app.AsyncResult(task_id, task_name=self.name)

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None
    ) -> None:
        """Store a custom state (``PROGRESS`` and the like) for the running task."""
        task_id = task_id or self.request.id
        if task_id is None or state is None:
            raise ValueError("update_state() needs a task id (run it inside a task) and a state")
        self.app.store_state(task_id, state, meta, request=self.request)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        from caraway.canvas import Signature

        return Signature.from_task(self, args, kwargs, options)

    def s(self, *args: Any, **kwargs: Any) -> Any:
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Any:
        return self.signature(args, kwargs, immutable=True)

    subtask = signature

    def map(self, it: Iterable[Any]) -> Any:
        from caraway.canvas import xmap

        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> Any:
        from caraway.canvas import xstarmap

        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Any], n: int) -> Any:
        from caraway.canvas import chunks

        return chunks(self.s(), it, n, app=self.app)

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"


def build_task(
    app: Caraway, fun: Callable[..., Any], base: type[Task] | None, options: Mapping[str, Any]
) -> Task:
    """Create the Task instance ``@app.task`` registers for ``fun``."""
    unknown = set(options) - set(TASK_DEFAULTS) - {"base"}
    if unknown:
        raise TypeError(
            f"unknown task option(s) {sorted(unknown)} for {fun.__qualname__}; "
            f"known: {sorted(TASK_DEFAULTS)}"
        )
    base = base or app.Task
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
    _validate_options(name, attrs)
    cls = type(fun.__name__, (base,), attrs)
    task: Task = cls()
    return task


def _validate_options(name: str, attrs: Mapping[str, Any]) -> None:
    max_retries = attrs.get("max_retries", 3)
    if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
        raise ValueError(
            f"task {name!r}: max_retries must be a non-negative int or None, not {max_retries!r}"
        )
    from caraway.calling import check_limits

    # the same check every call makes, so a bad limit fails here rather than at each call
    check_limits(f"task {name!r}", attrs.get("time_limit"), attrs.get("soft_time_limit"))
    rate = attrs.get("rate_limit")
    if rate is not None:
        from caraway.rates import parse_rate

        parse_rate(rate)


def task_name(app: Caraway, fun: Callable[..., Any]) -> str:
    """``module.function``, with ``__main__`` replaced by the app's main name (as Celery)."""
    module = fun.__module__
    if module == "__main__" and app.main:
        module = app.main
    return f"{module}.{fun.__name__}"
