"""AsyncResult, ResultSet and GroupResult: a task's state as its result document tells it.

The state logic lives here; waiting is the backend's (pub/sub, reply queue or a short
adaptive wait; ``await`` is woken on the event loop where the store allows), so ``get()``
never polls in a tight loop. A failure's exception is rebuilt without importing anything
(see ``protocol.results.exception_from_dict``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    #: what a task returns; Any where a handle is not parameterised (``AsyncResult``)
    R = TypeVar("R", default=Any)
else:  # PEP 696 defaults are for the type checker; at run time a plain TypeVar does
    from typing import TypeVar

    R = TypeVar("R")

from caraway import current, states
from caraway.brokers.contracts import Backend, GroupStore
from caraway.config import Settings
from caraway.exceptions import (
    ImproperlyConfigured,
    IncompleteStream,
    TaskRevokedError,
    TimeoutError,
)
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

#: True inside ``allow_join_result()``: a task may wait for results (at its own risk)
_JOIN_ALLOWED: ContextVar[bool] = ContextVar("caraway_join_allowed", default=False)


@contextmanager
def _join_allowed(allowed: bool) -> Iterator[None]:
    token = _JOIN_ALLOWED.set(allowed)
    try:
        yield
    finally:
        _JOIN_ALLOWED.reset(token)


def allow_join_result() -> AbstractContextManager[None]:
    """Let the code inside wait for results while a task runs (Celery's escape hatch)."""
    return _join_allowed(True)


def denied_join_result() -> AbstractContextManager[None]:
    """The opposite of :func:`allow_join_result`, for a block inside one."""
    return _join_allowed(False)


def assert_will_not_block() -> None:
    """RuntimeError when called inside a running task outside ``allow_join_result()``."""
    if current_request() is not None and not _JOIN_ALLOWED.get():
        raise RuntimeError(
            "Never call result.get() within a task: it can deadlock the worker. "
            "Use a chain or a chord, or wrap the call in allow_join_result() if you must."
        )


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


class AsyncResult(Generic[R]):
    """The handle ``delay()`` returns: read the state and result of one task by id."""

    #: Celery's ``result.TimeoutError``: what ``get(timeout=)`` raises
    TimeoutError = TimeoutError

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
        #: a chord body's result: the header's results (also its ``parent``, as in Celery)
        self.header: GroupResult | None = None
        self._cache: dict[str, Any] | None = None

    @property
    def task_id(self) -> str:
        return self.id

    # -- reading ---------------------------------------------------------------------------
    def exists(self) -> bool:
        """True when the backend holds a result for this id (Celery 5.7): tells a task
        that is waiting (PENDING, stored nothing yet) from an id never sent or expired
        only as far as the backend can, exactly as Celery's."""
        if self._cache is not None:
            return True
        return self.app.require_backend().load(self.id) is not None

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
    def children(self) -> list[AsyncResult | GroupResult]:
        """The tasks this task sent while it ran, as the stored result records them."""
        found = self._document().get("children") or []
        return [result_from_tuple(item, app=self.app) for item in found if item]

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
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        **kwargs: Any,
    ) -> R:
        """Wait for the task to finish and return its result.

        Raises the task's exception when it failed and ``propagate`` is true, and
        :class:`caraway.exceptions.TimeoutError` when ``timeout`` seconds pass first.
        ``interval`` is accepted for Celery compatibility; waiting is event-driven.
        ``on_message`` is called with each state document the wait sees (STARTED, a
        custom PROGRESS state, the final one), as with Celery's rpc and Redis backends.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        if callback is not None:
            kwargs["callback"] = callback
        if follow_parents and propagate and self.parent is not None:
            self.parent._raise_if_failed()
        document = self._wait(
            timeout, check_parents=follow_parents and propagate, on_message=on_message
        )
        if propagate and document.get("status") in states.PROPAGATE_STATES:
            if follow_parents and self.parent is not None:
                # the cause first, as Celery's parent walk finds it: a chord body's
                # ChordError comes from a header task's own error
                self.parent._raise_if_failed()
            raise self._exception(document)
        value: R = self._value(document)
        if kwargs.get("callback") is not None:
            kwargs["callback"](self.id, value)
        return value

    wait = get

    def maybe_throw(
        self, propagate: bool = True, callback: Callable[[str, Any], Any] | None = None
    ) -> None:
        """Raise the task's exception if it failed (and ``propagate``); else call
        ``callback(task_id, value)`` when given. Reads the state once, waits for nothing."""
        document = self._document()
        if propagate and document.get("status") in states.PROPAGATE_STATES:
            raise self._exception(document)
        if callback is not None:
            callback(self.id, self._value(document))

    maybe_reraise = maybe_throw

    def iterdeps(
        self, intermediate: bool = False
    ) -> Iterator[tuple[AsyncResult | GroupResult | None, AsyncResult | GroupResult]]:
        """``(parent, node)`` for this result and its children, breadth first (Celery's order).

        Raises IncompleteStream when a node is not ready and ``intermediate`` is false:
        its children are not known yet.
        """
        stack: deque[tuple[AsyncResult | GroupResult | None, AsyncResult | GroupResult]] = deque(
            [(None, self)]
        )
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if node.ready():
                stack.extend((node, child) for child in node.children or ())
            elif not intermediate:
                raise IncompleteStream()

    def collect(
        self, intermediate: bool = False, **kwargs: Any
    ) -> Iterator[tuple[AsyncResult | GroupResult, Any]]:
        """``(result, value)`` for this task and every task it started, as they finish.

        Needs the children recorded (``result_extended`` or a task that calls others).
        """
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    def get_leaf(self) -> Any:
        """The value of the last task in the graph this task started."""
        value = None
        for _, node in self.iterdeps():
            value = node.get()
        return value

    def then(self, callback: Callable[[AsyncResult], Any], **kwargs: Any) -> None:
        """Call ``callback(self)`` once the result is ready (waits here; no event loop)."""
        self._wait(None)
        callback(self)

    def build_graph(self, intermediate: bool = False, formatter: Any = None) -> dict[Any, Any]:
        """{node: [children]} of this result's graph (Celery's DependencyGraph as a dict)."""
        graph: dict[Any, list[Any]] = {}
        for parent, node in self.iterdeps(intermediate=intermediate):
            graph.setdefault(node, [])
            if parent is not None:
                graph.setdefault(parent, []).append(node)
        return graph

    @property
    def backend(self) -> Backend:
        return self.app.require_backend()

    @property
    def supports_native_join(self) -> bool:
        return True

    @property
    def graph(self) -> dict[Any, Any]:
        return self.build_graph()

    @property
    def ignored(self) -> bool:
        """True when the task was sent with ``ignore_result`` (nothing will be stored)."""
        return bool(getattr(self, "_ignored", False))

    def throw(self, *args: Any, **kwargs: Any) -> None:
        """Raise the given exception here (Celery's promise API)."""
        if args and isinstance(args[0], BaseException):
            raise args[0]
        if args and isinstance(args[0], type) and issubclass(args[0], BaseException):
            raise args[0](*args[1:2])
        raise RuntimeError(f"result {self.id}: throw() needs an exception, got {args!r}")

    def as_list(self) -> list[str]:
        """This result's id and its parents', nearest first."""
        found: list[str] = []
        node: AsyncResult | GroupResult | None = self
        while node is not None:
            found.append(str(node.id))
            node = node.parent
        return found

    async def aget(self, timeout: float | None = None, propagate: bool = True, **kwargs: Any) -> R:
        """``get()`` for async code (``await result`` is the same): the backend wakes the
        coroutine (Redis pub/sub, SQLite's change counter; a worker thread for the others),
        so the loop is never blocked. A chain step whose earlier steps must be watched for
        failures waits as ``get()`` does, on a worker thread."""
        if self._cache is None and self.parent is not None and propagate:
            kwargs.setdefault("disable_sync_subtasks", False)
            return await asyncio.to_thread(self.get, timeout, propagate, **kwargs)
        document = self._cache
        if document is None:
            backend = self.app.require_backend()
            raw = await backend.await_ready(self.id, until=_is_ready, timeout=timeout)
            if raw is None:
                raise TimeoutError(
                    f"task {self.id} ({self.task_name or 'unknown task'}) did not finish "
                    f"within {timeout}s"
                )
            document = self._cache = protocol.decode_document(raw)
        if propagate and document.get("status") in states.PROPAGATE_STATES:
            raise self._exception(document)
        value: R = self._value(document)
        return value

    def __await__(self) -> Generator[Any, None, R]:
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
        """Ask every worker not to run this task (or to stop it, with ``terminate``);
        ``wait`` waits up to ``timeout`` s for the workers' replies, as Celery's."""
        self.app.control.revoke(
            self.id,
            terminate=terminate,
            signal=signal or "SIGTERM",
            reply=wait,
            timeout=timeout or 1.0,
        )

    def revoke_by_stamped_headers(
        self,
        headers: Mapping[str, Any] | Sequence[str],
        connection: Any = None,
        reply: bool = False,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> list[dict[str, Any]] | None:
        """Ask every worker not to run tasks stamped with ``headers`` (and to stop the
        running ones, with ``terminate``): ``app.control.revoke_by_stamped_headers``."""
        replies: list[dict[str, Any]] | None = self.app.control.revoke_by_stamped_headers(
            headers,
            terminate=terminate,
            signal=signal or "SIGTERM",
            reply=reply or wait,
            timeout=timeout or 1.0,
        )
        return replies

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


class EagerResult(AsyncResult[R]):
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
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        **kwargs: Any,
    ) -> R:
        if on_message is not None:
            on_message(self._document())
        if propagate and self.state in states.PROPAGATE_STATES:
            raise self._exception(self._document())
        value: R = self._raw_value
        if callback is not None:
            callback(self.id, value)
        return value

    async def aget(self, timeout: float | None = None, propagate: bool = True, **kwargs: Any) -> R:
        return self.get(timeout, propagate)

    def forget(self) -> None:
        """Nothing is stored for an eager result."""


class ResultSet:
    """Several results handled as one: wait for all, count the finished, revoke them all."""

    def __init__(
        self, results: Iterable[AsyncResult] | None = None, *, app: ResultHost | None = None
    ) -> None:
        self.results: list[AsyncResult] = list(results or ())
        if app is None and self.results:
            app = self.results[0].app
        self.app = _app(app)
        self.parent: AsyncResult | GroupResult | None = None

    # -- membership ------------------------------------------------------------------------
    def add(self, result: AsyncResult) -> None:
        if result not in self.results:
            self.results.append(result)

    def update(self, results: Iterable[AsyncResult]) -> None:
        self.results.extend(result for result in results if result not in self.results)

    def remove(self, result: AsyncResult | str) -> None:
        """Remove ``result`` (a handle or an id); KeyError when it is not a member."""
        if isinstance(result, str):
            result = AsyncResult(result, app=self.app)
        try:
            self.results.remove(result)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: AsyncResult | str) -> None:
        with suppress(KeyError):
            self.remove(result)

    def clear(self) -> None:
        self.results.clear()

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def __contains__(self, result: object) -> bool:
        return result in self.results

    # -- state -----------------------------------------------------------------------------
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

    @property
    def children(self) -> list[AsyncResult]:
        return self.results

    @property
    def backend(self) -> Backend:
        return self.app.require_backend()

    @property
    def supports_native_join(self) -> bool:
        return True

    def maybe_throw(
        self, propagate: bool = True, callback: Callable[[str, Any], Any] | None = None
    ) -> None:
        for result in self.results:
            result.maybe_throw(propagate=propagate, callback=callback)

    maybe_reraise = maybe_throw

    def _raise_if_failed(self) -> None:
        """Raise the first failed member's error (lets a group be a result's parent)."""
        if self.parent is not None:
            self.parent._raise_if_failed()
        for result in self.results:
            result._raise_if_failed()

    # -- waiting ---------------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True, **kwargs: Any) -> list[Any]:
        return self.join(timeout=timeout, propagate=propagate, **kwargs)

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        disable_sync_subtasks: bool = True,
        **kwargs: Any,
    ) -> list[Any]:
        """Every member's value, in order; ``timeout`` bounds the whole wait.

        With ``callback`` each ``(task_id, value)`` goes to it instead and the list is
        empty, as in Celery.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = result.get(
                timeout=remaining, propagate=propagate, disable_sync_subtasks=False, **kwargs
            )
            if callback is not None:
                callback(result.id, value)
            else:
                values.append(value)
        return values

    #: every backend here wakes on the result's own event, so the plain join is native
    join_native = join

    def iter_native(
        self, timeout: float | None = None, **kwargs: Any
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(task_id, meta)`` for each member in order, ``meta`` holding ``status``,
        ``result`` and ``traceback`` as the backend stored them (Celery's form)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for result in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            document = result._wait(left)
            meta = {key: document.get(key) for key in ("status", "traceback", "children")}
            meta["result"] = result._value(document)
            yield result.id, meta

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every member's value, awaited together."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        return list(
            await asyncio.gather(*(r.aget(timeout=left(), propagate=propagate) for r in self))
        )

    def __await__(self) -> Generator[Any, None, list[Any]]:
        return self.aget().__await__()

    def then(self, callback: Callable[[ResultSet], Any], **kwargs: Any) -> None:
        self.join()
        callback(self)

    # -- acting on every member ------------------------------------------------------------
    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Revoke every member (Celery's arguments: ``wait`` waits for the replies)."""
        self.app.control.revoke(
            [result.id for result in self.results],
            terminate=terminate,
            signal=signal or "SIGTERM",
            reply=wait,
            timeout=timeout or 1.0,
        )

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group's tasks, in the order the group listed them."""

    def __init__(
        self,
        id: str | None = None,
        results: Sequence[AsyncResult] | None = None,
        *,
        app: ResultHost | None = None,
        parent: AsyncResult | GroupResult | None = None,
    ) -> None:
        super().__init__(results, app=app)
        self.id = id
        self.parent = parent

    def as_tuple(self) -> list[Any]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], [result.as_tuple() for result in self.results]]

    def save(self) -> GroupResult:
        """Store the group so ``app.GroupResult.restore(id)`` finds it elsewhere."""
        if self.id is None:
            raise ValueError("cannot save a group result without an id")
        store = _group_store(self.app)
        document = protocol.encode_document({"result": self.as_tuple()})
        store.save_group(self.id, document, expires=self.app.conf.result_expires_seconds())
        return self

    def delete(self) -> None:
        """Forget the saved group (its members' results stay)."""
        if self.id is not None:
            _group_store(self.app).forget_group(self.id)

    @classmethod
    def restore(cls, id: str, *, app: ResultHost | None = None) -> GroupResult | None:
        """The group saved as ``id``, or None."""
        host = _app(app)
        raw = _group_store(host).load_group(id)
        return None if raw is None else cls.from_document(id, raw, app=host)

    @classmethod
    def from_document(cls, id: str, raw: bytes, *, app: ResultHost) -> GroupResult:
        tree = protocol.decode_document(raw)["result"]
        children = [result_from_tuple(item, app=app) for item in tree[1]]
        return cls(id, [c for c in children if isinstance(c, AsyncResult)], app=app)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self.id)

    def __repr__(self) -> str:
        ids = ", ".join(result.id for result in self.results)
        return f"<GroupResult: {self.id} [{ids}]>"


def result_from_tuple(
    value: Sequence[Any] | AsyncResult | GroupResult, *, app: ResultHost | None = None
) -> AsyncResult | GroupResult:
    """A result handle from its ``as_tuple()`` form (as result documents store children)."""
    if isinstance(value, (AsyncResult, GroupResult)):
        return value
    (task_id, parent_tuple), members = value[0], value[1] if len(value) > 1 else None
    parent = result_from_tuple(parent_tuple, app=app) if parent_tuple else None
    if members is not None:
        children = [result_from_tuple(item, app=app) for item in members]
        return GroupResult(
            task_id,
            [c for c in children if isinstance(c, AsyncResult)],
            app=app,
            parent=parent,
        )
    return AsyncResult(task_id, app=app, parent=parent)


def _group_store(app: ResultHost) -> GroupStore:
    backend = app.require_backend()
    if not isinstance(backend, GroupStore):
        scheme = backend.url.partition("://")[0]
        raise ImproperlyConfigured(
            f"the {scheme}:// result backend keeps no group results, so a group cannot be "
            "saved or restored; use a redis:// or sqlite:// result backend"
        )
    return backend
