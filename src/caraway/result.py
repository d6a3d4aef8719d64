"""AsyncResult and GroupResult: a task's state as its result document tells it.

The state logic lives here; waiting is the backend's (pub/sub, reply queue or a short
adaptive wait), so ``get()`` never polls in a tight loop. A failure's exception is
rebuilt without importing anything (see ``protocol.results.exception_from_dict``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from caraway import current, states
from caraway.brokers.contracts import Backend, GroupStore
from caraway.config import Settings
from caraway.exceptions import ImproperlyConfigured, TaskRevokedError, TimeoutError
from caraway.protocol import results as protocol
from caraway.request import current_request


class ResultHost(Protocol):
    """What a result handle needs of its app (``caraway.app.Caraway`` is one)."""

    conf: Settings

    def require_backend(self) -> Backend:
        """This thread's result backend; ResultsDisabled when none is configured."""

    @property
    def control(self) -> Any:
        """Remote control (``revoke``)."""


def _app(app: ResultHost | None) -> ResultHost:
    """``app``, or the current app for a handle built without one (as Celery does)."""
    if app is not None:
        return app
    found: ResultHost = current.get_current_app()
    return found


#: how often ``get()`` on a chain step looks at the steps before it while waiting
PARENT_CHECK_INTERVAL = 1.0


def _reporting(on_message: Callable[[dict[str, Any]], Any]) -> Callable[[bytes], bool]:
    """``until`` for Backend.wait that also hands each new document to ``on_message``."""
    last: list[bytes] = []

    def until(raw: bytes) -> bool:
        if not last or last[0] != raw:
            last[:] = [raw]
            on_message(protocol.decode_document(raw))
        return _is_ready(raw)

    return until


def _is_ready(raw: bytes) -> bool:
    return protocol.decode_document(raw).get("status") in states.READY_STATES


class AsyncResult:
    """The handle ``delay()`` returns: read the state and result of one task by id."""

    def __init__(
        self,
        id: str,
        *,
        app: ResultHost | None = None,
        task_name: str | None = None,
        parent: AsyncResult | GroupResult | None = None,
    ) -> None:
        self.id = id
        self.app = _app(app)
        self.task_name = task_name
        self.parent = parent
        #: a chord body's result: the header's results (Celery makes them the parent; ours
        #: waits until GroupResult takes part in get()'s parent walk)
        self.header: GroupResult | None = None
        self._cache: dict[str, Any] | None = None

    @property
    def task_id(self) -> str:
        return self.id

    # -- reading ---------------------------------------------------------------------------
    def _document(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        raw = self.app.require_backend().load(self.id)
        if raw is None:
            return {"status": states.PENDING, "result": None, "traceback": None}
        document = protocol.decode_document(raw)
        if document.get("status") in states.READY_STATES:
            self._cache = document
        return document

    @property
    def state(self) -> str:
        """PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED, or a custom state."""
        return str(self._document().get("status", states.PENDING))

    status = state

    @property
    def result(self) -> Any:
        """The return value, the exception of a failure, or a state's metadata."""
        return self._value(self._document())

    info = result

    @property
    def traceback(self) -> str | None:
        value = self._document().get("traceback")
        return str(value) if value is not None else None

    @property
    def date_done(self) -> datetime | None:
        value = self._document().get("date_done")
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        value = self._document().get("name")
        return str(value) if value is not None else self.task_name

    @property
    def args(self) -> Any:
        return self._document().get("args")

    @property
    def kwargs(self) -> Any:
        return self._document().get("kwargs")

    @property
    def worker(self) -> Any:
        return self._document().get("worker")

    @property
    def retries(self) -> Any:
        return self._document().get("retries")

    @property
    def queue(self) -> Any:
        return self._document().get("queue")

    @property
    def children(self) -> list[AsyncResult]:
        found = self._document().get("children") or []
        return [AsyncResult(item[0][0], app=self.app) for item in found if item and item[0]]

    def ready(self) -> bool:
        """True once the task reached SUCCESS, FAILURE or REVOKED."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    # -- waiting ---------------------------------------------------------------------------
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        disable_sync_subtasks: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Wait for the task to finish and return its result.

        Raises the task's exception when it failed and ``propagate`` is true, and
        :class:`caraway.exceptions.TimeoutError` when ``timeout`` seconds pass first.
        ``interval`` is accepted for Celery compatibility; waiting is event-driven.
        ``on_message`` is called with each state document the wait sees (STARTED, a
        custom PROGRESS state, the final one), as with Celery's rpc and Redis backends.
        """
        if disable_sync_subtasks and current_request() is not None:
            raise RuntimeError(
                "Never call result.get() within a task: it can deadlock the worker. "
                "Use a chain or a chord, or pass disable_sync_subtasks=False if you must."
            )
        if follow_parents and propagate and self.parent is not None:
            self.parent._raise_if_failed()
        document = self._wait(
            timeout, check_parents=follow_parents and propagate, on_message=on_message
        )
        if propagate and document.get("status") in states.PROPAGATE_STATES:
            raise self._exception(document)
        return self._value(document)

    wait = get

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, **kwargs: Any
    ) -> Any:
        """``get()`` for async code: waits on a worker thread, never blocking the loop."""
        kwargs.setdefault("disable_sync_subtasks", False)
        return await asyncio.to_thread(self.get, timeout, propagate, **kwargs)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.aget().__await__()

    def _wait(
        self,
        timeout: float | None,
        *,
        check_parents: bool = False,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        document = self._document()
        if document.get("status") in states.READY_STATES:
            if on_message is not None:
                on_message(document)
            return document
        backend = self.app.require_backend()
        until = _is_ready if on_message is None else _reporting(on_message)
        if check_parents and self.parent is not None:
            # a chain whose earlier step failed never runs this one: wait in slices and
            # look at the parents between them, raising their failure as Celery does
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                piece = PARENT_CHECK_INTERVAL if left is None else min(left, PARENT_CHECK_INTERVAL)
                raw = backend.wait(self.id, until=until, timeout=max(piece, 0.0))
                if raw is not None or (left is not None and left <= piece):
                    break
                self.parent._raise_if_failed()
        else:
            raw = backend.wait(self.id, until=until, timeout=timeout)
        if raw is None:
            raise TimeoutError(
                f"task {self.id} ({self.task_name or 'unknown task'}) did not finish within "
                f"{timeout}s; its state is {self.state}"
            )
        document = protocol.decode_document(raw)
        self._cache = document
        return document

    def _raise_if_failed(self) -> None:
        if self.parent is not None:
            self.parent._raise_if_failed()
        document = self._document()
        if document.get("status") in states.PROPAGATE_STATES:
            raise self._exception(document)

    def _exception(self, document: dict[str, Any]) -> BaseException:
        value = self._value(document)
        if isinstance(value, BaseException):
            return value
        return TaskRevokedError(f"task {self.id} ended as {document.get('status')}")

    @staticmethod
    def _value(document: dict[str, Any]) -> Any:
        value = document.get("result")
        failed = document.get("status") in states.EXCEPTION_STATES
        if failed and isinstance(value, dict) and "exc_type" in value:
            return protocol.exception_from_dict(value)
        return value

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.app.require_backend().forget(self.id)

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Ask every worker not to run this task (or to stop it, with ``terminate``)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def as_tuple(self) -> list[Any]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], None]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id


class EagerResult(AsyncResult):
    """The result of ``apply()``/eager mode: already known, never stored."""

    def __init__(
        self,
        id: str,
        value: Any,
        state: str,
        *,
        app: ResultHost | None = None,
        traceback: str | None = None,
        task_name: str | None = None,
    ) -> None:
        super().__init__(id, app=app, task_name=task_name)
        exc_value = value
        if isinstance(value, BaseException):
            exc_value = protocol.exception_to_dict(value)
        self._cache = {"status": state, "result": exc_value, "traceback": traceback}
        self._raw_value = value

    def _document(self) -> dict[str, Any]:
        assert self._cache is not None
        return self._cache

    @property
    def result(self) -> Any:
        return self._raw_value

    info = result

    def _wait(
        self,
        timeout: float | None,
        *,
        check_parents: bool = False,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        return self._document()

    def _exception(self, document: dict[str, Any]) -> BaseException:
        if isinstance(self._raw_value, BaseException):
            return self._raw_value
        return super()._exception(document)

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        disable_sync_subtasks: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if on_message is not None:
            on_message(self._document())
        if propagate and self.state in states.PROPAGATE_STATES:
            raise self._exception(self._document())
        return self._raw_value

    def forget(self) -> None:
        """Nothing is stored for an eager result."""


class GroupResult:
    """The results of a group's tasks, in the order the group listed them."""

    def __init__(
        self,
        id: str | None,
        results: Sequence[AsyncResult] | None = None,
        *,
        app: ResultHost | None = None,
    ) -> None:
        self.id = id
        self.results = list(results or ())
        if app is None and self.results:
            app = self.results[0].app
        self.app = _app(app)
        self.parent: AsyncResult | GroupResult | None = None

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def completed_count(self) -> int:
        return sum(1 for result in self.results if result.successful())

    def ready(self) -> bool:
        return all(result.ready() for result in self.results)

    def successful(self) -> bool:
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        return any(result.failed() for result in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def _raise_if_failed(self) -> None:
        """Raise the first failed member's error (lets a GroupResult be a result's parent)."""
        if self.parent is not None:
            self.parent._raise_if_failed()
        for result in self.results:
            result._raise_if_failed()

    def get(self, timeout: float | None = None, propagate: bool = True, **kwargs: Any) -> list[Any]:
        return self.join(timeout=timeout, propagate=propagate, **kwargs)

    def join(
        self, timeout: float | None = None, propagate: bool = True, **kwargs: Any
    ) -> list[Any]:
        """Wait for every task in order; ``timeout`` bounds the whole wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(result.get(timeout=remaining, propagate=propagate, **kwargs))
        return values

    def revoke(self, terminate: bool = False, signal: str | None = None, **kwargs: Any) -> None:
        for result in self.results:
            result.revoke(terminate=terminate, signal=signal)

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def as_tuple(self) -> list[Any]:
        return [[self.id, None], [result.as_tuple() for result in self.results]]

    def save(self) -> GroupResult:
        """Store the group so ``app.GroupResult.restore(id)`` finds it elsewhere."""
        if self.id is None:
            raise ValueError("cannot save a group result without an id")
        store = _group_store(self.app)
        document = protocol.encode_document({"result": self.as_tuple()})
        store.save_group(self.id, document, expires=self.app.conf.result_expires_seconds())
        return self

    @classmethod
    def restore(cls, id: str, *, app: ResultHost | None = None) -> GroupResult | None:
        """The group saved as ``id``, or None."""
        host = _app(app)
        raw = _group_store(host).load_group(id)
        return None if raw is None else cls.from_document(id, raw, app=host)

    @classmethod
    def from_document(cls, id: str, raw: bytes, *, app: ResultHost) -> GroupResult:
        tree = protocol.decode_document(raw)["result"]
        children = [AsyncResult(item[0][0], app=app) for item in tree[1]]
        return cls(id, children, app=app)

    def __repr__(self) -> str:
        ids = ", ".join(result.id for result in self.results)
        return f"<GroupResult: {self.id} [{ids}]>"


def _group_store(app: ResultHost) -> GroupStore:
    backend = app.require_backend()
    if not isinstance(backend, GroupStore):
        scheme = backend.url.partition("://")[0]
        raise ImproperlyConfigured(
            f"the {scheme}:// result backend keeps no group results, so a group cannot be "
            "saved or restored; use a redis:// or sqlite:// result backend"
        )
    return backend
