"""What a task and its app are to the core: a task's options, hooks and run; the app's handles.

:class:`TaskBase` is everything the worker and the eager runner need of a task (its options,
its body, its hooks, its ``self.request``); :class:`caraway.task.Task` adds the ways to call
it (``delay``, ``apply_async``, ``apply``, ``retry``, signatures). :class:`AppLike` is the
app as the core sees it. The two live in one module because each names the other
(``task.app``, ``app.tasks``) and the app's class sits at the top of the package.
"""

from __future__ import annotations

import abc
import inspect
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ClassVar, Protocol

from caraway import exceptions, rates
from caraway.brokers.contracts import Backend, QueueAdmin, Transport
from caraway.config import Settings
from caraway.protocol import results as docs
from caraway.request import Request, pop_request, push_request, request_of
from caraway.result import AsyncResult, EagerResult, ResultHost
from caraway.schedules.base import zone_of

#: Options a task declaration accepts besides the function itself, with their defaults.
TASK_DEFAULTS: dict[str, Any] = {
    "name": None,
    "bind": False,
    "typing": True,
    "track_started": None,
    "ignore_result": None,
    "store_errors_even_if_ignored": None,
    "serializer": None,
    "compression": None,
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


class AppLike(ResultHost, Protocol):
    """The app as the core sees it (:class:`caraway.app.Caraway` is the one implementation)."""

    main: str | None
    conf: Settings

    @property
    def broker_url(self) -> str:
        """The broker URL in effect."""

    @property
    def backend(self) -> Backend | None:
        """This thread's result backend, or None when results are disabled."""

    @property
    def tasks(self) -> Mapping[str, TaskBase]:
        """Registered tasks by name."""

    def get_task(self, name: str) -> TaskBase:
        """The task registered as ``name``; NotRegistered naming what there is."""

    @property
    def thread_oid(self) -> str:
        """This app's id in this thread: the ``reply_to`` of what it sends."""

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a task by name."""

    async def asend(self, send: Callable[[], Any]) -> Any:
        """Run a send on the app's sender thread: asyncio code's loop never waits on it."""

    def publishing_batch(self) -> AbstractContextManager[None]:
        """Hold what is sent inside and publish it in one round trip at the end."""

    def connection(self) -> Transport:
        """A new broker connection (the caller closes it)."""

    def admin(self) -> QueueAdmin:
        """A new handle on the broker's queues and schedule (the caller closes it)."""


class TaskBase(abc.ABC):
    """A task's declaration and body. Subclass :class:`caraway.Task`, not this."""

    name: str = ""
    app: AppLike
    typing: bool = True
    bind: bool = False
    track_started: bool | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    serializer: str | None = None
    compression: str | None = None
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

    def is_async(self) -> bool:
        """True for tasks declared with ``async def``."""
        return inspect.iscoroutinefunction(self._fun if self._fun is not None else self.run)

    # -- request context -------------------------------------------------------------------
    @property
    def request(self) -> Request:
        return request_of(self._key) or Request()

    def push_request(self, request: Request) -> None:
        push_request(self._key, request)

    def pop_request(self) -> None:
        pop_request(self._key)

    # -- hooks run by the worker (override in a base class) --------------------------------
    def before_start(  # noqa: B027 - a hook: nothing unless a subclass says
        self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        """Called before the task body runs."""

    def on_success(  # noqa: B027 - a hook: nothing unless a subclass says
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        """Called after the task body returned."""

    def on_failure(  # noqa: B027 - a hook: nothing unless a subclass says
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called after the task body raised."""

    def on_retry(  # noqa: B027 - a hook: nothing unless a subclass says
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called when the task asked to be retried."""

    def after_return(  # noqa: B027 - a hook: nothing unless a subclass says
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called after the outcome was stored, whatever it was."""

    # -- the calling API (caraway.task.Task implements it, with Celery's signatures) -------
    @abc.abstractmethod
    def apply_async(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send a message asking a worker to run this task."""

    @abc.abstractmethod
    def apply(self, *args: Any, **kwargs: Any) -> EagerResult:
        """Run the task here, as a worker would."""

    @abc.abstractmethod
    def retry(self, *args: Any, **kwargs: Any) -> exceptions.Retry:
        """Re-send this task to run again later and stop the current run."""

    # -- arguments -------------------------------------------------------------------------
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

    def takes_request(self) -> bool:
        """True when the task, as an errback, wants ``(request, exc, traceback)`` (Celery's
        rule: more than one positional parameter, or ``*args``)."""
        signature = self._signature()
        if signature is None:
            return False
        positional = [
            p
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        return len(positional) > 1 or any(p.kind is p.VAR_POSITIONAL for p in positional)

    # -- retries and states ----------------------------------------------------------------
    def backoff_delay(self, retries: int) -> float:
        """Delay before retry number ``retries + 1`` under ``retry_backoff`` (exponential)."""
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay: float = min(factor * (2**retries), float(self.retry_backoff_max))
        if self.retry_jitter:
            delay = random.uniform(0, delay)
        return delay

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None
    ) -> None:
        """Store a custom state (``PROGRESS`` and the like) for the running task."""
        request = self.request
        task_id = task_id or request.id
        if task_id is None or state is None:
            raise ValueError("update_state() needs a task id (run it inside a task) and a state")
        store_state(
            self.app, task_id, state, meta, parent_id=request.parent_id, group_id=request.group
        )


class StateStore(Protocol):
    """What :func:`store_state` needs of an app (a task's, or a result handle's)."""

    conf: Settings

    def require_backend(self) -> Backend: ...


def store_state(
    app: StateStore,
    task_id: str,
    state: str,
    meta: Any,
    *,
    parent_id: str | None = None,
    group_id: str | None = None,
) -> None:
    """Write ``state`` with ``meta`` as ``task_id``'s result document, as Celery's backend
    does for ``update_state`` (``app`` is the task's app: its store, zone and expiry)."""
    document = docs.result_document(
        task_id, state, meta, parent_id=parent_id, group_id=group_id, zone=zone_of(app.conf)
    )
    app.require_backend().store(
        task_id,
        docs.encode_document(document),
        state=state,
        expires=app.conf.result_expires_seconds(),
    )


def check_limits(name: str, hard: Any, soft: Any) -> None:
    """ValueError naming the value unless both limits are positive seconds, soft <= hard."""
    for label, value in (("time_limit", hard), ("soft_time_limit", soft)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        ):
            raise ValueError(f"{name}: {label} must be a positive number of seconds, not {value!r}")
    if hard is not None and soft is not None and soft > hard:
        raise ValueError(f"{name}: soft_time_limit ({soft}) is above time_limit ({hard})")


def validate_options(name: str, attrs: Mapping[str, Any]) -> None:
    """Check a task declaration's options once, so a bad one fails where it is declared."""
    max_retries = attrs.get("max_retries", 3)
    if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
        raise ValueError(
            f"task {name!r}: max_retries must be a non-negative int or None, not {max_retries!r}"
        )
    check_limits(f"task {name!r}", attrs.get("time_limit"), attrs.get("soft_time_limit"))
    rate = attrs.get("rate_limit")
    if rate is not None:
        rates.parse_rate(rate)
