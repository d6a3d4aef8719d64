"""A received task's context (Celery's ``self.request``) and which task is running now.

Two stacks, both kept in context variables so that every thread of a threads pool and
every asyncio task has its own: the requests being run, keyed by the task object that runs
them (so a task calling another task directly still sees its own request), and the
requests whose calls become children (a task sent from inside gets its ``parent_id`` and
``root_id`` from the top one).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
    #: True unless a worker or ``apply()`` runs the task (a plain function call)
    called_directly: bool = True
    #: the name the task was sent under (``shadow_name``), if not its own
    shadow: str | None = None
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] = field(default_factory=dict)
    #: ``replace()`` depth, as Celery counts it
    replaced_task_nesting: int = 0
    #: the message's properties (correlation_id, reply_to, delivery_mode, priority...)
    properties: dict[str, Any] = field(default_factory=dict)
    #: Celery's worker leaves these None on its pool path; they exist for code reading them
    logfile: str | None = None
    loglevel: int | None = None
    utc: bool | None = None
    #: the message as received (a TaskMessage), so ``retry()`` can re-send it faithfully
    message: Any = None
    #: the task object running this request (``current_task``)
    running_task: Any = None
    #: messages the run asks to be published once it ends (``retry()``'s), as
    #: ``caraway.publish.Outgoing``: the worker sends them with the run's other effects
    resends: list[Any] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        """A custom header is an attribute, as in Celery (``apply_async(headers={...})``)."""
        headers = self.__dict__.get("headers") or {}
        if name in headers:
            return headers[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get(self, name: str, default: Any = None) -> Any:
        """Celery's ``self.request.get('key')``: an attribute or a header, else ``default``."""
        try:
            return getattr(self, name)
        except AttributeError:
            return default


#: the requests being run, per thread and per asyncio task, keyed by task object identity
_RUNNING: ContextVar[tuple[tuple[int, Request], ...]] = ContextVar("caraway_running", default=())
#: the task running in this thread or asyncio task; calls made now become its children
_CURRENT: ContextVar[tuple[Request, ...]] = ContextVar("caraway_current", default=())


def request_of(key: int) -> Request | None:
    """The innermost request run by the task whose key is ``key``, if it runs now."""
    for owner, request in reversed(_RUNNING.get()):
        if owner == key:
            return request
    return None


def push_request(key: int, request: Request) -> None:
    _RUNNING.set((*_RUNNING.get(), (key, request)))


def pop_request(key: int) -> None:
    stack = _RUNNING.get()
    if stack and stack[-1][0] == key:  # the usual case: the innermost
        _RUNNING.set(stack[:-1])
        return
    for index in range(len(stack) - 1, -1, -1):
        if stack[index][0] == key:
            _RUNNING.set(stack[:index] + stack[index + 1 :])
            return


def push_current(request: Request) -> None:
    """Mark ``request`` as the running task (calls made now are its children)."""
    _CURRENT.set((*_CURRENT.get(), request))


def pop_current() -> None:
    _CURRENT.set(_CURRENT.get()[:-1])


def current_request() -> Request | None:
    """The request of the task running in this thread or asyncio task, if any."""
    stack = _CURRENT.get()
    return stack[-1] if stack else None
