"""Caraway: the app — settings, the task registry, and the producer and result handles.

One app object per project, as in Celery. It owns no threads; the broker and result
connections it hands out are per process and per thread (forked children and pool
threads open their own), so an app can be imported before a fork and used after it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import platform
import sys
import threading
import uuid
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Concatenate, Literal, TypeVar, overload

from caraway import current, publish, signals
from caraway.asyncpublish import AsyncSender
from caraway.brokers.contracts import Backend, QueueAdmin, Transport
from caraway.brokers.registry import open_admin, open_backend, open_transport
from caraway.builtins import BUILTINS
from caraway.canvas.signature import Signature
from caraway.clients.urls import mask_url
from caraway.config import Settings, mask_settings
from caraway.contrib.django.fixup import DjangoFixup
from caraway.contrib.django.fixup import fixup as django_fixup
from caraway.control import Control
from caraway.entities import Queue, declare_on
from caraway.events.api import Events
from caraway.events.dispatcher import send_task_sent
from caraway.exceptions import (
    AlwaysEagerIgnored,
    ImproperlyConfigured,
    NotRegistered,
    ResultsDisabled,
)
from caraway.protocol.events import task_sent_fields
from caraway.publish import Outgoing, Publisher
from caraway.request import current_request
from caraway.result import AsyncResult as AsyncResultType
from caraway.result import GroupResult as GroupResultType
from caraway.result import ResultHost
from caraway.schedules.base import zone_of
from caraway.schedules.entries import periodic_task_entry
from caraway.signals import Signal
from caraway.task import Task as TaskType
from caraway.task import build_task, default_task_name
from caraway.utils.pid import current_pid

if TYPE_CHECKING:
    from caraway.task import P as TaskP
    from caraway.task import R as TaskR

R = TypeVar("R")

DEFAULT_SQLITE_FILE = "caraway.sqlite3"

logger = logging.getLogger("caraway.app")


def default_sqlite_file(creator: Mapping[str, Any]) -> str:
    """The embedded default's file: ``caraway.sqlite3`` beside the module that made the app.

    Not the current directory: a client started elsewhere imports the same module, so it
    must find the same file (with the current directory its results stayed PENDING for
    ever). ``creator`` is that module's globals; an app made by caraway itself (the CLI's
    default app), in an interactive session or by ``python -c`` uses the current directory.
    """
    name = str(creator.get("__name__", ""))
    path = creator.get("__file__")
    if not isinstance(path, str) or name == "caraway" or name.startswith("caraway."):
        return os.path.abspath(DEFAULT_SQLITE_FILE)
    return os.path.join(os.path.dirname(os.path.abspath(path)), DEFAULT_SQLITE_FILE)


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.pid = 0
        self.transport: Transport | None = None
        self.backend: Backend | None = None
        self.oid: str | None = None


def _choose_batch_connection(batch: publish.Held, connection: Transport) -> None:
    """A batch member's ``producer=``: the batch goes out on it (one connection a batch)."""
    if batch.connection is not None and batch.connection is not connection:
        raise ValueError(
            "the messages of one batch (a group, a chord header, publishing_batch()) go out "
            "on one connection: pass the same producer=/connection= to each, or none"
        )
    batch.connection = connection


#: apply_async options about the connection and the AMQP publish flags
_DELIVERY_OPTIONS = frozenset(
    ("producer", "connection", "publisher", "declare", "mandatory", "immediate")
)


def _connection_option(options: Mapping[str, Any]) -> Transport | None:
    """The connection apply_async was told to send on (``producer``, ``connection`` or the
    old ``publisher``): a caraway connection from ``app.connection()`` or ``app.producer``."""
    given = [
        (name, options[name])
        for name in ("producer", "connection", "publisher")
        if options.get(name) is not None
    ]
    if not given:
        return None
    if len({id(value) for _, value in given}) > 1:
        names = ", ".join(name for name, _ in given)
        raise ValueError(f"apply_async() got different connections for {names}: pass one")
    name, value = given[0]
    if not isinstance(value, Transport):
        raise TypeError(
            f"apply_async({name}=...) takes a caraway connection (app.connection() or "
            f"app.producer), not {type(value).__name__}: caraway does not publish through "
            "kombu's objects"
        )
    return value


def _check_delivery_flags(options: Mapping[str, Any], outgoing: Outgoing) -> None:
    """AMQP's ``immediate`` and ``mandatory`` publish flags, where they would change what
    happens: refused with the reason (caraway's sends to a queue are mandatory already, and
    the queue is declared before the first send, so a message is never silently dropped)."""
    if options.get("immediate"):
        raise ValueError(
            "apply_async(immediate=True) is not supported: RabbitMQ removed the immediate "
            "flag in 3.0 (it closes the connection); use expires= for a task that must start "
            "soon or not at all"
        )
    if not options.get("mandatory"):
        return
    route = outgoing.route
    if route.exchange_type == "fanout" or (route.exchange and route.binding_key is None):
        raise ValueError(
            f"apply_async(mandatory=True) through exchange {route.exchange!r}: caraway does "
            "not report a message no binding matched; route to a queue, or declare the queue "
            "it must reach with declare=[Queue(...)] so a binding always matches"
        )


def _package_version(package: str) -> str | None:
    # importlib.metadata is a hundred modules; a process asks for versions only in a report
    from importlib import metadata  # noqa: PLC0415 - rarely needed, see above

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _declared_key(queue: Queue) -> tuple[str, str, str]:
    exchange = queue.exchange_entity
    return (queue.name, exchange.name if exchange is not None else "", queue.routing_key)


class Caraway:
    """A caraway application: ``Caraway('proj', broker=..., backend=..., include=[...])``.

    With no broker, broker and results share one SQLite file, ``caraway.sqlite3`` beside the
    module that creates the app (see :func:`default_sqlite_file`). With a broker but no
    backend, results are disabled, as in Celery, and reading one raises
    :class:`ResultsDisabled`.
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
        #: Celery's default fix-up: Django's, when DJANGO_SETTINGS_MODULE is set
        self._fixups: list[DjangoFixup] = [f for f in [django_fixup(self)] if f is not None]
        #: autodiscover_tasks() calls not run yet: (packages or None, related_name)
        self._discoveries: list[tuple[Any, str]] = []
        self._default_sqlite = default_sqlite_file(sys._getframe(1).f_globals)
        self._tasks: dict[str, TaskType] = {}
        self._local = _PerThread()
        #: queues ``apply_async(declare=...)`` made exist, by name, exchange and key
        self._declared: set[tuple[str, str, str]] = set()
        self._imported = False
        self._control: Control | None = None
        self._group_result_cls: type[GroupResultType] | None = None
        #: the one publish path, for every task message this app sends
        self.publisher = Publisher(self.conf, on_sent=self._on_sent)
        #: sends for asyncio callers (asend_task, Task.adelay), on a thread of its own
        self._async_sender = AsyncSender(self.connection, self.publisher)
        #: Celery's app signals (receivers get ``sender=app``): the first three are sent by
        #: :meth:`finalize`, on_after_fork in a child process after a fork
        self.on_configure = Signal("app.on_configure")
        self.on_after_configure = Signal("app.on_after_configure")
        self.on_after_finalize = Signal("app.on_after_finalize")
        self.on_after_fork = Signal("app.on_after_fork")
        #: Celery's extra command-line options: click Options by command ('worker',
        #: 'beat', 'events'; 'preload' for every command, sent to user_preload_options)
        self.user_options: defaultdict[str, set[Any]] = defaultdict(set)
        _FORKED_APPS.add(self)
        self.configured = False
        self.finalized = False
        self._pending_periodic: list[tuple[str, dict[str, Any], str | None]] = []
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
        if url == "rpc":
            return "rpc://"  # Celery's backend='rpc'
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
    def task(self, fun: Callable[TaskP, TaskR]) -> TaskType[TaskP, TaskR]: ...

    @overload
    def task(
        self, fun: None = None, *, bind: Literal[True], **options: Any
    ) -> Callable[[Callable[Concatenate[Any, TaskP], TaskR]], TaskType[TaskP, TaskR]]: ...

    @overload
    def task(
        self, fun: None = None, **options: Any
    ) -> Callable[[Callable[TaskP, TaskR]], TaskType[TaskP, TaskR]]: ...

    def task(self, fun: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""

        def register(function: Callable[..., Any]) -> TaskType:
            base = options.pop("base", None) or self.Task
            task = build_task(self, function, base, options)
            _annotate(task, self.conf.task_annotations)
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
        """Import ``include`` and ``imports`` modules once, so their tasks register, and
        run the ``autodiscover_tasks()`` calls waiting for this moment."""
        if self._imported:
            return
        self._imported = True
        for fixup in self._fixups:
            fixup.on_import_modules()
        signals.import_modules.send(sender=self)
        for name in [*(self.conf.imports or ()), *(self.conf.include or ())]:
            importlib.import_module(name)
        self._discover()
        if self.conf.task_annotations:
            # settings read after the tasks were declared (config_from_object below them)
            for task in self._tasks.values():
                _annotate(task, self.conf.task_annotations)
        self.finalize()

    def finalize(self, auto: bool = False) -> None:
        """Finish setting the app up, once: ``on_configure``, ``on_after_configure`` (the
        configuration is read; pending ``add_periodic_task`` entries join ``beat_schedule``
        first), then ``on_after_finalize``. A worker, beat and the first ``app.tasks`` call
        it, after the ``imports``/``include`` modules, so receivers connected there count."""
        if self.finalized:
            return
        self.finalized = True
        self.loader_import_modules()  # its own call to finalize() returns at once
        if not self.configured:
            self.configured = True
            self.on_configure.send(sender=self)
            pending, self._pending_periodic = self._pending_periodic, []
            for key, item, name in pending:
                self._add_periodic_task(key, item, name)
            replies = self.on_after_configure.send(sender=self, source=self.conf)
            for _, reply in replies:
                if isinstance(reply, ImproperlyConfigured):
                    raise reply  # a bad add_periodic_task fails now, not at beat's first tick
        self.on_after_finalize.send(sender=self)

    # -- periodic tasks --------------------------------------------------------------------
    def add_periodic_task(
        self,
        schedule: Any,
        sig: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Add an entry to ``beat_schedule``, as Celery's: ``schedule`` (seconds, timedelta,
        crontab, solar), ``sig`` (``add.s(2, 2)``, a task or its name), extra ``args`` and
        ``kwargs``, ``name`` (default: the signature's repr) and apply_async options.
        Returns the entry's name; raises InvalidSchedule for a bad entry, at once."""
        key, item = periodic_task_entry(schedule, sig, args, kwargs or None, name, opts)
        if self.configured:
            self._add_periodic_task(key, item, name)
        else:
            self._pending_periodic.append((key, item, name))
        return key

    def _add_periodic_task(self, key: str, item: dict[str, Any], name: str | None) -> None:
        if name is None and key in self.conf.beat_schedule:
            logger.warning(
                "periodic task %r replaced an unnamed one of the same signature; pass name= "
                "to add_periodic_task to keep both",
                key,
            )
        self.conf.beat_schedule[key] = item

    @property
    def steps(self) -> Any:
        """Celery's bootsteps (``app.steps['worker'].add(...)``): refused, with the way."""
        raise ImproperlyConfigured(
            "app.steps: Celery's bootsteps are not supported by caraway (its worker has no "
            "blueprint); hook into the worker with signals instead: worker_init, "
            "worker_ready, worker_process_init, worker_shutting_down, heartbeat_sent, "
            "task_prerun/task_postrun (caraway.signals), and app.user_options for options"
        )

    @property
    def timezone(self) -> tzinfo:
        """The app's zone: ``timezone``, else UTC."""
        return zone_of(self.conf)

    def now(self) -> datetime:
        """Now, in the app's zone (what schedules read their fields against)."""
        return datetime.now(timezone.utc).astimezone(self.timezone)

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.<related_name>`` for each package that has one.

        With no packages, every installed Django app is searched (the Django fix-up lists
        them). As in Celery the imports wait until the app's tasks are first needed
        (``app.tasks``, a worker starting), since a Django project creates its app before
        Django is ready to import models; ``force=True`` imports now. Raises
        ImproperlyConfigured for no packages where no framework lists its apps.
        """
        if packages is None and not self._fixups:
            raise ImproperlyConfigured(
                "autodiscover_tasks() with no packages searches Django's installed apps, and "
                "this app is not in a Django project (DJANGO_SETTINGS_MODULE is not set when "
                "it is created); name the packages: app.autodiscover_tasks(['proj.orders'])"
            )
        self._discoveries.append((packages, related_name))
        if force or self._imported:
            self._discover()

    def _discover(self) -> None:
        while self._discoveries:
            packages, related_name = self._discoveries.pop(0)
            if packages is None:
                names = [name for fixup in self._fixups for name in fixup.autodiscover_tasks()]
            else:
                names = list(packages() if callable(packages) else packages)
            for package in names:
                module = f"{package}.{related_name}" if related_name else package
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    if exc.name != module:
                        raise

    def setup_security(
        self,
        allowed_serializers: Iterable[str] | None = None,
        key: str | None = None,
        key_password: str | bytes | None = None,
        cert: str | None = None,
        store: str | None = None,
        digest: str | None = None,
        serializer: str = "json",
    ) -> None:
        """Sign what this process sends and verify what it receives (Celery's ``auth``
        serializer), for every app in the process; see :func:`caraway.security.setup_security`."""
        try:
            from caraway import security  # noqa: PLC0415 - needs the optional cryptography
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"message signing needs the cryptography package ({exc}); pip install caraway[auth]"
            ) from exc
        security.setup_security(
            allowed_serializers, key, key_password, cert, store, digest, serializer, app=self
        )

    # -- connections -----------------------------------------------------------------------
    def _thread_state(self) -> _PerThread:
        local = self._local
        pid = current_pid()
        if local.pid != pid:
            local.pid = pid
            local.transport = None
            local.backend = None
            local.oid = None
        return local

    def connection(self, *args: Any, **kwargs: Any) -> Transport:
        """A new broker connection; the caller closes it, or uses it in ``with``.

        Celery's arguments (hostname, userid, ...) are refused: the URL is broker_url.
        """
        if args or kwargs:
            raise ImproperlyConfigured(
                "app.connection() takes no arguments in caraway; it connects to broker_url"
            )
        return open_transport(self.broker_url, options=self._broker_options())

    connection_for_read = connection_for_write = connection

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
            "exchange_type": conf.task_default_exchange_type,
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
        if url.startswith(("db+", "postgres")):
            options.update(self._database_options(options))
        return open_backend(url, options=options)

    def _database_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Celery's ``database_*`` settings, for the SQL result store."""
        conf = self.conf
        settings = {
            "engine_options": dict(conf.database_engine_options),
            "engine_callback": conf.database_engine_callback,
            "table_names": dict(conf.database_table_names),
            "table_schemas": dict(conf.database_table_schemas),
            "create_tables_at_setup": conf.database_create_tables_at_setup,
            "result_expires": conf.result_expires_seconds(),
        }
        return {key: value for key, value in settings.items() if key not in given}

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
    def signature(self, *args: Any, **kwargs: Any) -> Signature:
        """``app.signature('proj.add', (2, 2), countdown=10)``: a signature bound to this app
        (Celery's ``app.signature``)."""
        return Signature(*args, app=self, **kwargs)

    @property
    def current_task(self) -> TaskType | None:
        """The task running in this thread or asyncio task (eager ones too), or None."""
        request = current_request()
        return request.running_task if request is not None else None

    @property
    def current_worker_task(self) -> TaskType | None:
        """The task a worker runs here, or None (eager calls do not count, as Celery's)."""
        request = current_request()
        if request is None or request.is_eager:
            return None
        found: TaskType | None = request.running_task
        return found

    def bugreport(self) -> str:
        """Versions, platform and changed settings (URLs' passwords masked), as Celery's
        ``app.bugreport()``: what ``caraway report`` prints and ``inspect report`` replies."""
        software = [
            f"{name}:{_package_version(name)}" for name in ("caraway", "redis", "amqp", "celery")
        ]
        software = [item for item in software if not item.endswith(":None")]
        backend = self.result_backend_url
        lines = [
            f"software -> {' '.join(software)} py:{platform.python_version()}",
            f"platform -> system:{platform.system()} arch:{platform.machine()}",
            f"            kernel version:{platform.release()} "
            f"imp:{platform.python_implementation()}",
            f"settings -> transport:{self.broker_url.partition('://')[0]} "
            f"results:{mask_url(backend) if backend else 'disabled'}",
            "",
        ]
        for name, value in mask_settings(self.conf.changes()).items():
            lines.append(f"{name}: {value!r}")
        return "\n".join(lines)

    def gen_task_name(self, name: str, module: str) -> str:
        """The name of a task declared without ``name=``: ``module.function``; override it
        in a subclass to change the naming, as Celery's tasks guide shows."""
        return default_task_name(self, name, module)

    def broker_connection(self, *args: Any, **kwargs: Any) -> Transport:
        """Celery's old name of :meth:`connection`."""
        return self.connection(*args, **kwargs)

    def Worker(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's worker class bound to the app: refused, with the way to start one."""
        raise ImproperlyConfigured(
            "app.Worker (Celery's WorkController) is not supported: start a worker with "
            "app.worker_main(['worker', '-l', 'INFO']) or the caraway command line; in "
            "tests, caraway.testing.start_worker(app)"
        )

    WorkController = Worker

    def set_current(self) -> None:
        """Make this the current app (``current_app``), as Celery's."""
        current.set_current_app(self)

    def set_default(self) -> None:
        """Make this the app used when none is current, as Celery's."""
        current.set_default_factory(lambda: self)

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
        if _task is not None and (not options or publish.STATIC_OPTIONS.issuperset(options)):
            sent = self._send_plain(_task, args, kwargs, options)
            if sent is not None:
                return sent
        if _task is None and self.conf.task_always_eager:
            warnings.warn(
                AlwaysEagerIgnored(
                    f"send_task({name!r}) publishes even with task_always_eager: it sends by "
                    "name; call the task's apply_async() to run it here"
                ),
                stacklevel=2,
            )
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
        connection = None
        if not _DELIVERY_OPTIONS.isdisjoint(options):  # rare: a plain delay() skips this
            connection = _connection_option(options)
            _check_delivery_flags(options, outgoing)
            if options.get("declare"):
                self._declare(options["declare"], connection)
        if not message.ignore_result and self.result_backend_url:
            backend = self.backend
            if backend is not None and not backend.shared:
                backend.on_task_call(message.id)  # rpc://: the reply queue must exist first
        held = publish.held()
        if held is not None:
            held.append(outgoing)
            if connection is not None:
                _choose_batch_connection(held, connection)
        else:
            self.publisher.send(connection or self.producer, [outgoing])
        parent = current_request()
        if parent is not None and options.get("add_to_parent", True):
            parent.headers.setdefault("_children", []).append(message.id)
        if _task is not None and type(_task).AsyncResult is not TaskType.AsyncResult:
            return _task.AsyncResult(message.id)  # a base's own result class (abortable)
        return AsyncResultType(message.id, app=self, task_name=name)

    def _send_plain(
        self,
        task: TaskType,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> AsyncResultType | None:
        """A call without options but static ones (``publish.STATIC_OPTIONS``) sent from
        its task's plan for them (``publish.plain``), or None
        when it must take the general path: publish signal receivers (they may change the
        message), a batch, no connection or reply id yet in this thread, or a plan the app
        does not approve (or without a template for a call made inside a task)."""
        if (
            signals.before_task_publish.receivers
            or signals.after_task_publish.receivers
            or signals.task_sent.receivers
            or publish.held() is not None
        ):
            return None
        local = self._thread_state()
        transport, reply_to = local.transport, local.oid
        if transport is None or reply_to is None:
            return None
        plan = publish.plain(task, self.conf, transport, options)
        if plan is None:
            return None
        if plan.approved is None:
            plan.approved = self._approves(task, plan)
        if not plan.approved:
            return None
        parent = current_request()
        if parent is not None and (plan.child is None or not parent.id):
            return None
        task_id = plan.send(transport, tuple(args or ()), dict(kwargs or {}), reply_to, parent)
        if task_id is None:
            return None
        if parent is not None:  # the running task records its children, as send_task does
            parent.headers.setdefault("_children", []).append(task_id)
        return AsyncResultType(task_id, app=self, task_name=task.name)

    def _approves(self, task: TaskType, plan: publish.Plain) -> bool:
        """Whether a plain call may skip what send_task does around the publish: the
        result backend's per-call hook (rpc://), task-sent events, a task's own result
        class."""
        if self.conf.task_send_sent_event or type(task).AsyncResult is not TaskType.AsyncResult:
            return False
        if plan.ignore_result or not self.result_backend_url:
            return True
        backend = self.backend
        return backend is None or backend.shared

    async def asend(self, send: Callable[[], R]) -> R:
        """Run a send (``apply_async``, ``send_task``, a canvas's ``apply_async``) on this
        app's sender thread, in the caller's context, and return what it returns once the
        broker has its messages: for asyncio code, whose loop never waits on the broker.

        Sends in flight together go out in one round trip. Inside ``publishing_batch()``
        the send joins the batch instead. Raises what ``send`` raises, and
        ImproperlyConfigured with an ``rpc://`` result backend, whose replies only the
        sending thread can read.
        """
        url = self.result_backend_url
        if url is not None and url.startswith("rpc"):
            raise ImproperlyConfigured(
                "rpc:// results go back to the thread that sent the task, and an async send "
                "is published by the app's sender thread: use a result store any process "
                "can read (redis://, sqlite://...) or send with delay()/apply_async()"
            )
        if publish.held() is not None:  # inside a batch: its owner sends, all at once
            return send()

        def build() -> tuple[R, list[Outgoing]]:
            with publish.holding() as held:
                result = send()
            if held is not None and held.connection is not None:
                raise ImproperlyConfigured(
                    "producer=/connection= cannot be used with an async send (asend, adelay): "
                    "those are published by the app's sender thread on its own connection; "
                    "leave it out"
                )
            return result, held or []

        sent: R = await self._async_sender.send(build)
        return sent

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResultType:
        """:meth:`send_task` for asyncio code (see :meth:`asend`)."""
        return await self.asend(functools.partial(self.send_task, name, args, kwargs, **options))

    @contextmanager
    def publishing_batch(self) -> Iterator[None]:
        """Hold the messages sent inside and publish them in one round trip at the end
        (a group's members, a chord's header). Nested batches join the outer one."""
        with publish.holding() as held:
            yield
        if held:
            self.publisher.send(held.connection or self.producer, held)

    def _declare(self, entities: Iterable[Any], connection: Transport | None) -> None:
        """``apply_async(declare=[Queue(...)])``: make each queue exist with its exchange and
        binding before the message is sent, once per queue per process (Celery declares once
        per connection), through the broker of ``connection`` or of the app."""
        queues = list(entities)
        for entity in queues:
            if not isinstance(entity, Queue):
                raise TypeError(
                    f"apply_async(declare=...) takes caraway.Queue entities, not {entity!r}; "
                    "an exchange is declared with a Queue bound to it "
                    "(Queue('name', Exchange('ex', type='topic'), routing_key='key'))"
                )
        pending = [queue for queue in queues if _declared_key(queue) not in self._declared]
        if not pending:
            return
        url = connection.url if connection is not None else self.broker_url
        admin = open_admin(url, options=self._broker_options())
        try:
            for queue in pending:
                declare_on(admin, queue)
                self._declared.add(_declared_key(queue))
        finally:
            admin.close()

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
    def events(self) -> Events:
        """Celery's monitoring API: ``app.events.Receiver(connection, handlers={...})``,
        ``app.events.State()``, ``app.events.Dispatcher()``."""
        return Events(self)

    @property
    def control(self) -> Control:
        """Remote control of the worker nodes (broadcast commands)."""
        if self._control is None:
            self._control = Control(self)
        return self._control

    def close(self) -> None:
        self._async_sender.close()
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


def _annotate(task: TaskType, annotations: Any) -> None:
    """Apply ``task_annotations`` to ``task`` as Celery does: a dict keyed by task name
    or '*' (the name's entry applied after '*'), an object with ``annotate(task)``, or a
    list of those applied in order; an '@name' key wraps the method:
    ``value(original, *args, **kwargs)``."""
    if not annotations:
        return
    sources = annotations if isinstance(annotations, (list, tuple)) else [annotations]
    for entry in sources:
        source = _import_object(entry) if isinstance(entry, str) else entry
        if isinstance(source, Mapping):
            found = {**(source.get("*") or {}), **(source.get(task.name) or {})}
        elif hasattr(source, "annotate"):
            found = source.annotate(task) or {}
        else:
            raise ImproperlyConfigured(
                f"task_annotations entry {source!r} is neither a dict nor has annotate(task)"
            )
        for key, value in found.items():
            if key.startswith("@"):
                _wrap_method(task, key[1:], value)
            else:
                setattr(task, key, value)


def _wrap_method(task: TaskType, name: str, around: Callable[..., Any]) -> None:
    original = getattr(task, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return around(original, *args, **kwargs)

    setattr(task, name, wrapped)


def _import_object(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        module_name, _, attribute = path.rpartition(".")
    found = getattr(importlib.import_module(module_name), attribute)
    return found() if isinstance(found, type) else found


#: apps whose on_after_fork a forked child sends
_FORKED_APPS: weakref.WeakSet[Caraway] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for app in list(_FORKED_APPS):
        if app.on_after_fork.receivers:
            app.on_after_fork.send(sender=app)


os.register_at_fork(after_in_child=_after_fork_in_child)


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
