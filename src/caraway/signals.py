"""Hooks for user code: Celery 5's signal set, with Celery's names, arguments and rules.

Owns :class:`Signal` (connect with ``sender=``, ``weak=``, ``dispatch_uid=``, ``retry=``,
as a decorator or a call) and every signal Celery defines; the code that sends each one
lives where the event happens (publish, execution, the worker). The one thing to know:
``send`` never lets a receiver's exception out (it is logged and returned), and a signal
with no receivers costs one attribute test (``if signal.receivers:``), so hot paths send
freely.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import Any

logger = logging.getLogger("caraway.signals")

Receiver = Callable[..., Any]
#: (receiver identity or dispatch_uid, sender identity)
LookupKey = tuple[Hashable, Hashable]

#: a retried receiver waits this long after its first failure, doubling up to the max
_RETRY_START, _RETRY_MAX = 1.0, 30.0


def _identity(target: Any) -> Hashable:
    """How receivers and senders are compared: strings by value (task names, hostnames),
    bound methods by (instance, function), anything else by object identity (as Celery)."""
    if isinstance(target, (str, bytes)):
        return target
    function = getattr(target, "__func__", None)
    if function is not None:
        return (id(getattr(target, "__self__", None)), id(function))
    return id(target)


_ANY_SENDER = _identity(None)


def _accepts_kwargs(receiver: Receiver) -> bool:
    try:
        parameters = inspect.signature(receiver).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return True
    return any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)


class Signal:
    """A named hook; receivers are called as ``receiver(signal=, sender=, **arguments)``.

    ``Signal('name')`` or, as in Celery, ``Signal(providing_args=..., name='name')``.
    ``receivers`` is the list of connections; it is empty when nobody listens, which is
    what senders on hot paths test before building arguments.
    """

    def __init__(
        self,
        name: str | Iterable[str] | None = None,
        providing_args: Iterable[str] | None = None,
        use_caching: bool = False,
        *,
        doc: str = "",
    ) -> None:
        if name is not None and not isinstance(name, str):
            # Celery's positional order: Signal(providing_args, use_caching, name)
            name, providing_args = None, name
        self.name = name
        self.providing_args = set(providing_args or ())
        self.use_caching = use_caching  # accepted as Celery's; lookups are cheap uncached
        self.__doc__ = doc or f"The {name} signal."
        #: ``[(lookup key, receiver or weak reference to it), ...]``
        self.receivers: list[tuple[LookupKey, Any]] = []
        self.lock = threading.Lock()
        self._dead = False

    # -- connecting ------------------------------------------------------------------------
    def connect(self, *args: Any, **options: Any) -> Any:
        """Connect a receiver: ``@sig.connect``, ``@sig.connect(sender=...)``, ``sig.connect(fn)``.

        Options, as in Celery: ``sender`` (only what this sender sends; None: any),
        ``weak`` (default True: the signal does not keep the receiver alive),
        ``dispatch_uid`` (a receiver connected twice under one uid is connected once),
        ``retry`` (call again, backing off, until the receiver does not raise).
        Raises ValueError for a receiver that does not take ``**kwargs``.
        """
        if args and callable(args[0]):
            return self._options(*args[1:], **options)(args[0])
        return self._options(*args, **options)

    def _options(
        self,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
        retry: bool = False,
    ) -> Callable[[Receiver], Receiver]:
        def connect(receiver: Receiver) -> Receiver:
            uid = dispatch_uid
            if retry:
                weak_ref = False  # the wrapper has no other owner: a weak ref would die at once
                uid = uid if uid is not None else _identity(receiver)
                receiver = _retrying(receiver, uid)
            else:
                weak_ref = weak
            self._connect(receiver, sender, weak_ref, uid)
            return receiver

        return connect

    def _connect(
        self, receiver: Receiver, sender: Any, weak: bool, dispatch_uid: Hashable | None
    ) -> None:
        if not callable(receiver):
            raise TypeError(f"signal receivers must be callable, got {receiver!r}")
        if not _accepts_kwargs(receiver):
            raise ValueError(
                f"signal receiver {receiver!r} must accept keyword arguments (**kwargs)"
            )
        key = _lookup_key(receiver, sender, dispatch_uid)
        stored: Any = receiver
        if weak:
            stored = self._weak(receiver)
        with self.lock:
            self._clear_dead()
            if all(existing != key for existing, _ in self.receivers):
                self.receivers.append((key, stored))

    def _weak(self, receiver: Receiver) -> Any:
        owner = getattr(receiver, "__self__", None)
        if owner is not None and getattr(receiver, "__func__", None) is not None:
            reference: Any = weakref.WeakMethod(receiver)
            weakref.finalize(owner, self._mark_dead)
        else:
            reference = weakref.ref(receiver)
            weakref.finalize(receiver, self._mark_dead)
        return reference

    def _mark_dead(self) -> None:
        # Called by the collector, maybe while this thread holds the lock: only flag it.
        self._dead = True

    def _clear_dead(self) -> None:
        if self._dead:
            self._dead = False
            self.receivers[:] = [
                (key, ref)
                for key, ref in self.receivers
                if not (isinstance(ref, weakref.ReferenceType) and ref() is None)
            ]

    def disconnect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        weak: bool | None = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Disconnect what was connected with this receiver (or uid) and sender; True if found."""
        key = _lookup_key(receiver, sender, dispatch_uid)
        with self.lock:
            self._clear_dead()
            for index, (existing, _) in enumerate(self.receivers):
                if existing == key:
                    del self.receivers[index]
                    return True
        return False

    def has_listeners(self, sender: Any = None) -> bool:
        return bool(self._live(sender))

    # -- sending ---------------------------------------------------------------------------
    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call each receiver connected for ``sender`` (or for any sender).

        Returns ``[(receiver, reply or exception), ...]``; a receiver's exception is
        logged and returned, never raised (Celery's send is Django's send_robust).
        """
        if not self.receivers:
            return []
        replies: list[tuple[Receiver, Any]] = []
        for receiver in self._live(sender):
            try:
                replies.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                logger.exception("signal %s: receiver %r raised %r", self.name, receiver, exc)
                replies.append((receiver, exc))
        return replies

    send_robust = send

    def _live(self, sender: Any) -> list[Receiver]:
        wanted = _identity(sender)
        with self.lock:
            self._clear_dead()
            entries = [ref for (_, key), ref in self.receivers if key in (_ANY_SENDER, wanted)]
        live = []
        for ref in entries:
            receiver = ref() if isinstance(ref, weakref.ReferenceType) else ref
            if receiver is not None:
                live.append(receiver)
        return live

    def __repr__(self) -> str:
        return f"<Signal: {self.name} providing_args={sorted(self.providing_args)!r}>"

    __str__ = __repr__


def _lookup_key(receiver: Any, sender: Any, dispatch_uid: Hashable | None) -> LookupKey:
    if dispatch_uid is not None:
        return (dispatch_uid, _identity(sender))
    uid = getattr(receiver, "_dispatch_uid", None)  # a retrying wrapper: its receiver's id
    return (uid if uid is not None else _identity(receiver), _identity(sender))


def _retrying(receiver: Receiver, uid: Hashable) -> Receiver:
    """``connect(retry=True)``: call ``receiver`` until it does not raise, backing off."""

    def call(*args: Any, **kwargs: Any) -> Any:
        wait = _RETRY_START
        while True:
            try:
                return receiver(*args, **kwargs)
            except Exception as exc:
                logger.error("signal receiver %r raised %r; retrying in %.0fs", receiver, exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, _RETRY_MAX)

    call._dispatch_uid = uid  # type: ignore[attr-defined]
    call.__wrapped__ = receiver  # type: ignore[attr-defined]
    return call


# -- tasks: sent by the publishing process ---------------------------------------------------
before_task_publish = Signal(
    "before_task_publish",
    {"body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"},
)
after_task_publish = Signal("after_task_publish", {"body", "exchange", "routing_key", "headers"})
#: deprecated in Celery 5 in favour of after_task_publish; still sent, as Celery does
task_sent = Signal("task_sent", {"task_id", "task", "args", "kwargs", "eta", "taskset"})

# -- tasks: sent by the worker ---------------------------------------------------------------
task_received = Signal("task_received", {"request"})
task_prerun = Signal("task_prerun", {"task_id", "task", "args", "kwargs"})
task_postrun = Signal("task_postrun", {"task_id", "task", "args", "kwargs", "retval"})
task_success = Signal("task_success", {"result", "runtime"})
task_retry = Signal("task_retry", {"request", "reason", "einfo"})
task_failure = Signal(
    "task_failure", {"task_id", "exception", "args", "kwargs", "traceback", "einfo"}
)
task_internal_error = Signal(
    "task_internal_error",
    {"task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"},
)
task_revoked = Signal("task_revoked", {"request", "terminated", "signum", "expired"})
task_rejected = Signal("task_rejected", {"message", "exc"})
task_unknown = Signal("task_unknown", {"message", "exc", "name", "id"})

# -- the worker program and its processes ----------------------------------------------------
celeryd_init = Signal("celeryd_init", {"instance", "conf", "options"})
celeryd_after_setup = Signal("celeryd_after_setup", {"instance", "conf"})
import_modules = Signal("import_modules")
worker_init = Signal("worker_init")
worker_before_create_process = Signal("worker_before_create_process")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutting_down = Signal("worker_shutting_down")
worker_shutdown = Signal("worker_shutdown")
heartbeat_sent = Signal("heartbeat_sent")

# -- logging ---------------------------------------------------------------------------------
setup_logging = Signal("setup_logging", {"loglevel", "logfile", "format", "colorize"})
after_setup_logger = Signal(
    "after_setup_logger", {"logger", "loglevel", "logfile", "format", "colorize"}
)
after_setup_task_logger = Signal(
    "after_setup_task_logger", {"logger", "loglevel", "logfile", "format", "colorize"}
)

# -- beat (sent by caraway.beat) -------------------------------------------------------------
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")

# -- eventlet's pool: caraway has no eventlet pool, so nothing sends these -------------------
eventlet_pool_started = Signal("eventlet_pool_started")
eventlet_pool_preshutdown = Signal("eventlet_pool_preshutdown")
eventlet_pool_postshutdown = Signal("eventlet_pool_postshutdown")
eventlet_pool_apply = Signal("eventlet_pool_apply", {"target", "args", "kwargs"})

# -- programs --------------------------------------------------------------------------------
user_preload_options = Signal("user_preload_options", {"app", "options"})

__all__ = [
    "Signal",
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "before_task_publish",
    "celeryd_after_setup",
    "celeryd_init",
    "eventlet_pool_apply",
    "eventlet_pool_postshutdown",
    "eventlet_pool_preshutdown",
    "eventlet_pool_started",
    "heartbeat_sent",
    "import_modules",
    "setup_logging",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_sent",
    "task_success",
    "task_unknown",
    "user_preload_options",
    "worker_before_create_process",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]
