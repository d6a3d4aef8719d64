"""Caraway: the app — settings, the task registry, and the producer and result handles.

One app object per project, as in Celery. It owns no threads; the broker and result
connections it hands out are per process and per thread (forked children and pool
threads open their own), so an app can be imported before a fork and used after it.
"""

from __future__ import annotations

import importlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Concatenate, Literal, overload

from caraway import current, publish
from caraway.brokers.contracts import Backend, QueueAdmin, Transport
from caraway.brokers.registry import open_admin, open_backend, open_transport
from caraway.builtins import BUILTINS
from caraway.config import Settings
from caraway.control import Control
from caraway.events.dispatcher import send_task_sent
from caraway.exceptions import ImproperlyConfigured, NotRegistered, ResultsDisabled
from caraway.protocol.events import task_sent_fields
from caraway.publish import Outgoing, Publisher
from caraway.request import current_request
from caraway.result import AsyncResult as AsyncResultType
from caraway.result import GroupResult as GroupResultType
from caraway.result import ResultHost
from caraway.task import Task as TaskType
from caraway.task import build_task

if TYPE_CHECKING:
    from caraway.task import P, R

DEFAULT_SQLITE_FILE = "caraway.sqlite3"


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.pid = 0
        self.transport: Transport | None = None
        self.backend: Backend | None = None
        self.oid: str | None = None


class Caraway:
    """A caraway application: ``Caraway('proj', broker=..., backend=..., include=[...])``.

    With no broker, broker and results share one SQLite file in the current directory
    (``caraway.sqlite3``, made absolute now). With a broker but no backend, results are
    disabled, as in Celery, and reading one raises :class:`ResultsDisabled`.
    """

    Task: type[TaskType] = TaskType

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        include: Sequence[str] | None = None,
        *,
        set_as_current: bool = True,
        task_cls: type[TaskType] | None = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings()
        self.conf.from_env(os.environ)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = list(include)
        if settings:
            self.conf.update(settings)
        if task_cls is not None:
            self.Task = task_cls
        self._default_sqlite = os.path.abspath(DEFAULT_SQLITE_FILE)
        self._tasks: dict[str, TaskType] = {}
        self._local = _PerThread()
        self._imported = False
        self._control: Control | None = None
        self._group_result_cls: type[GroupResultType] | None = None
        #: the one publish path, for every task message this app sends
        self.publisher = Publisher(self.conf, on_sent=self._on_sent)
        for name, function, options in BUILTINS:
            register: Any = self.task(name=name, bind=True, typing=False, **options)
            register(function)
        if set_as_current:
            current.set_current_app(self)
        current.register_app(self)
        if main:
            for twin in current.twins(self):
                for name, task in twin._tasks.items():
                    self._tasks.setdefault(name, task)

    # -- configuration ---------------------------------------------------------------------
    def config_from_object(self, obj: object | str, namespace: str | None = None) -> None:
        """Read settings from an object or a module (by name), as Celery does."""
        self.conf.from_object(obj, namespace=namespace)

    def config_from_envvar(self, variable_name: str, namespace: str | None = None) -> None:
        module = os.environ.get(variable_name)
        if not module:
            raise ImproperlyConfigured(
                f"environment variable {variable_name} is not set; it should name a config module"
            )
        self.config_from_object(module, namespace=namespace)

    @property
    def broker_url(self) -> str:
        """The broker URL in effect (the SQLite default when none is configured)."""
        url = self.conf.broker_url
        if not url or url in ("sqlite://", "sqlite:///"):
            return f"sqlite:///{self._default_sqlite}"
        return str(url)

    @property
    def result_backend_url(self) -> str | None:
        """The result backend URL in effect, or None when results are disabled."""
        url = self.conf.result_backend
        if url in ("sqlite://", "sqlite:///"):
            return f"sqlite:///{self._default_sqlite}"
        if url:
            return str(url)
        if not self.conf.broker_url:
            return self.broker_url
        return None

    # -- tasks -----------------------------------------------------------------------------
    # typed as Task[P, R]: a checker holds delay()/calls to the function's parameters, and
    # with bind=True to those after ``self``
    @overload
    def task(self, fun: Callable[P, R]) -> TaskType[P, R]: ...

    @overload
    def task(
        self, fun: None = None, *, bind: Literal[True], **options: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], TaskType[P, R]]: ...

    @overload
    def task(
        self, fun: None = None, **options: Any
    ) -> Callable[[Callable[P, R]], TaskType[P, R]]: ...

    def task(self, fun: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""

        def register(function: Callable[..., Any]) -> TaskType:
            base = options.pop("base", None) or self.Task
            task = build_task(self, function, base, options)
            self._tasks[task.name] = task
            for twin in current.twins(self):
                twin._tasks.setdefault(task.name, task)
            return task

        if fun is not None and callable(fun) and not options:
            return register(fun)
        if fun is not None:
            raise TypeError("app.task() takes keyword options only: @app.task(name='...')")
        return register

    @property
    def tasks(self) -> Mapping[str, TaskType]:
        """Registered tasks by name (importing ``include``/``imports`` modules first)."""
        self.loader_import_modules()
        return self._tasks

    def register_task(self, task: TaskType) -> TaskType:
        task.app = self
        self._tasks[task.name] = task
        return task

    def get_task(self, name: str) -> TaskType:
        """The task registered as ``name``; raises NotRegistered listing what there is."""
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(n for n in self._tasks if not n.startswith("celery.")))
            raise NotRegistered(
                f"task {name!r} is not registered in this process; registered: "
                f"{known or '(none)'}. Add its module to include=[...] or imports."
            ) from None

    def loader_import_modules(self) -> None:
        """Import ``include`` and ``imports`` modules once, so their tasks register."""
        if self._imported:
            return
        self._imported = True
        for name in [*(self.conf.imports or ()), *(self.conf.include or ())]:
            importlib.import_module(name)

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] = (),
        related_name: str = "tasks",
        force: bool = True,
    ) -> None:
        """Import ``<package>.tasks`` for each package that has one (Django-style layout)."""
        names = packages() if callable(packages) else packages
        for package in names:
            module = f"{package}.{related_name}" if related_name else package
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise

    # -- connections -----------------------------------------------------------------------
    def _thread_state(self) -> _PerThread:
        local = self._local
        if local.pid != os.getpid():
            local.pid = os.getpid()
            local.transport = None
            local.backend = None
            local.oid = None
        return local

    def connection(self) -> Transport:
        """A new broker connection (the caller closes it)."""
        return open_transport(self.broker_url, options=self._broker_options())

    def admin(self) -> QueueAdmin:
        """A new handle on the broker's queues, schedule and dead letters, with the options
        of :meth:`connection` (the caller closes it; it connects on first use)."""
        return open_admin(self.broker_url, options=self._broker_options())

    def _broker_options(self) -> dict[str, Any]:
        conf = self.conf
        options = dict(conf.broker_transport_options)
        # how often one publish/fetch retries a dropped connection before raising: the
        # publish retry policy (Celery's producer rule); the worker's loop retries on top
        policy = dict(conf.task_publish_retry_policy or {})
        retries = policy.get("max_retries", 3) if conf.task_publish_retry else 0
        if retries is not None:
            options.setdefault("max_retries", int(retries))
        if conf.broker_use_ssl:
            options.setdefault("ssl", conf.broker_use_ssl)
        amqp_settings = {
            "heartbeat": conf.broker_heartbeat,
            "connect_timeout": conf.broker_connection_timeout,
            "max_priority": conf.task_queue_max_priority,
            "queue_type": conf.task_default_queue_type,
        }
        if self.broker_url.startswith(("amqp", "pyamqp")):
            for key, value in amqp_settings.items():
                if value is not None:
                    options.setdefault(key, value)
        return options

    @property
    def producer(self) -> Transport:
        """This thread's broker connection for publishing."""
        local = self._thread_state()
        if local.transport is None:
            local.transport = self.connection()
        return local.transport

    def new_backend(self) -> Backend | None:
        url = self.result_backend_url
        if url is None:
            return None
        options = dict(self.conf.result_backend_transport_options)
        if url.startswith("rpc"):
            # results travel back over the broker to this thread's reply queue
            options.setdefault("broker_url", self.broker_url)
            options.setdefault("reply_to", self.thread_oid)
            options.setdefault("expires", self.conf.result_expires_seconds())
            options.setdefault("persistent", bool(self.conf.result_persistent))
        if self.conf.redis_backend_use_ssl:
            options.setdefault("ssl", self.conf.redis_backend_use_ssl)
        return open_backend(url, options=options)

    @property
    def backend(self) -> Backend | None:
        """This thread's result backend, or None when results are disabled."""
        local = self._thread_state()
        if local.backend is None:
            local.backend = self.new_backend()
        return local.backend

    @property
    def thread_oid(self) -> str:
        """A stable id for this app in this thread: the ``reply_to`` of messages sent here."""
        local = self._thread_state()
        if local.oid is None:
            local.oid = str(uuid.uuid4())
        return local.oid

    # -- calling ---------------------------------------------------------------------------
    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        _task: TaskType | None = None,
        **options: Any,
    ) -> AsyncResultType:
        """Send a task by name, for tasks this process cannot import."""
        task = _task if _task is not None else self._tasks.get(name)
        outgoing = publish.build(
            name,
            tuple(args or ()),
            dict(kwargs or {}),
            options,
            conf=self.conf,
            task=task,
            by_name=_task is None,
            reply_to=self.thread_oid,
        )
        message = outgoing.message
        if not message.ignore_result and self.result_backend_url:
            backend = self.backend
            if backend is not None and not backend.shared:
                backend.on_task_call(message.id)  # rpc://: the reply queue must exist first
        held = publish.held()
        if held is not None:
            held.append(outgoing)
        else:
            self.publisher.send(self.producer, [outgoing])
        parent = current_request()
        if parent is not None and options.get("add_to_parent", True):
            parent.headers.setdefault("_children", []).append(message.id)
        return AsyncResultType(message.id, app=self, task_name=name)

    @contextmanager
    def publishing_batch(self) -> Iterator[None]:
        """Hold the messages sent inside and publish them in one round trip at the end
        (a group's members, a chord's header). Nested batches join the outer one."""
        with publish.holding() as held:
            yield
        if held:
            self.publisher.send(self.producer, held)

    def _on_sent(self, outgoing: Outgoing) -> None:
        """A task-sent event for each message sent, with ``task_send_sent_event``."""
        if self.conf.task_send_sent_event:
            target = outgoing.route
            fields = task_sent_fields(
                outgoing.message,
                queue=target.queue,
                exchange=target.exchange or "",
                routing_key=target.routing_key,
            )
            send_task_sent(self, fields)

    # -- results ---------------------------------------------------------------------------
    def AsyncResult(
        self, id: str, task_name: str | None = None, parent: AsyncResultType | None = None
    ) -> AsyncResultType:
        """The result handle of task ``id`` on this app."""
        return AsyncResultType(id, app=self, task_name=task_name, parent=parent)

    @property
    def GroupResult(self) -> type[GroupResultType]:
        """``app.GroupResult(id, results)`` and ``app.GroupResult.restore(id)``, as in Celery."""
        if self._group_result_cls is None:
            self._group_result_cls = _bind_group_result(self)
        return self._group_result_cls

    def require_backend(self) -> Backend:
        backend = self.backend
        if backend is None:
            raise ResultsDisabled(
                "no result backend is configured, so results cannot be read; set "
                "result_backend (for example Caraway('proj', broker=..., "
                "backend='redis://localhost'))"
            )
        return backend

    # -- command line ----------------------------------------------------------------------
    def start(self, argv: Sequence[str] | None = None) -> None:
        """Run the ``caraway`` command line for this app (``if __name__ == '__main__'``)."""
        # The one upward import in the package (import-linter lists it): the command line
        # sits above the app, since it loads apps; Celery's API runs it from the app.
        from caraway.cli.main import run_for_app  # noqa: PLC0415 - see above

        run_for_app(self, list(argv) if argv is not None else None)

    def worker_main(self, argv: Sequence[str] | None = None) -> None:
        self.start(["worker", *(argv or [])])

    @property
    def control(self) -> Control:
        """Remote control of the worker nodes (broadcast commands)."""
        if self._control is None:
            self._control = Control(self)
        return self._control

    def close(self) -> None:
        local = self._thread_state()
        if local.transport is not None:
            local.transport.close()
            local.transport = None
        if local.backend is not None:
            local.backend.close()
            local.backend = None
        if self._control is not None:
            self._control.close()

    def __repr__(self) -> str:
        return f"<Caraway {self.main or '__main__'} at {id(self):#x}>"


def _bind_group_result(bound: Caraway) -> type[GroupResultType]:
    """``app.GroupResult``: Celery's GroupResult class whose handles default to ``bound``."""

    class GroupResult(GroupResultType):
        def __init__(
            self, id: str | None, results: Sequence[AsyncResultType] | None = None, **kw: Any
        ) -> None:
            super().__init__(id, list(results or ()), app=kw.get("app", bound))

        @classmethod
        def restore(cls, id: str, *, app: ResultHost | None = None) -> GroupResultType | None:
            return super().restore(id, app=app or bound)

    return GroupResult


current.set_default_factory(lambda: Caraway("default"))
