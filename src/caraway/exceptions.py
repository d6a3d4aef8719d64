"""Every error caraway raises, in one tree.

CarawayError
├── ImproperlyConfigured          a setting, URL or app is wrong; the message says how to fix it
│   ├── UnknownSetting            a setting name that does not exist (with "did you mean")
│   └── QueueNotFound (KeyError)  a route to a queue task_queues does not declare
├── NotRegistered (KeyError)      a task name this process does not know
├── TimeoutError                  AsyncResult.get(timeout=...) ran out
├── IncompleteStream              a result graph walked before its nodes finished
├── ResultsDisabled               no result backend configured, yet a result was asked for
├── BackendError                  the result store failed or holds something unreadable
├── BrokerError                   the broker failed
│   └── BrokerConnectionError     ... could not be reached (after the configured retries)
├── ProtocolError                 a message that cannot be decoded
│   ├── ContentDisallowed         its content type is not in accept_content
│   └── SecurityError             its signature (auth serializer) does not verify
├── SerializationError            arguments or a return value the serializer cannot encode
└── TaskError                     what a task's failure is reported as
    ├── WorkerLostError           the process running it died
    ├── TimeLimitExceeded         the hard time limit killed it
    ├── SoftTimeLimitExceeded     raised inside the task at its soft time limit
    ├── TaskRevokedError          it was revoked (or expired) before it ran
    ├── ChordError                a chord header task failed, so the body cannot run
    ├── MaxRetriesExceededError   retry() was called once too often
    └── RemoteTaskError           a failure whose exception type this process cannot import

TaskSignal (BaseException-free control flow raised *by* tasks, not errors):
    Retry, Reject, Ignore
"""

from __future__ import annotations

import builtins
from typing import Any, NoReturn


class CarawayError(Exception):
    """Base of every error caraway raises."""


class ImproperlyConfigured(CarawayError):
    """The app's configuration cannot work as given."""


class QueueNotFound(ImproperlyConfigured, KeyError):
    """A route names a queue that is not in task_queues, with task_create_missing_queues
    off (Celery's name and KeyError base)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownSetting(ImproperlyConfigured, KeyError):
    """A setting name that caraway (and Celery) does not define."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotRegistered(CarawayError, KeyError):
    """A task name this process has no function for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TimeoutError(CarawayError, builtins.TimeoutError):
    """The operation did not finish within the given timeout."""


class IncompleteStream(CarawayError):
    """A result's children were asked for before it finished (``iterdeps``/``collect``)."""


class ResultsDisabled(CarawayError, NotImplementedError):
    """Results were asked for, but the app has no result backend."""


class BackendError(CarawayError):
    """The result backend failed, or returned something that cannot be read."""


class BrokerError(CarawayError):
    """The broker failed."""


class BrokerConnectionError(BrokerError, ConnectionError):
    """The broker could not be reached."""


class ProtocolError(CarawayError):
    """A message that is not a valid Celery protocol v2 task message."""


class ContentDisallowed(ProtocolError):
    """A message whose content type is not in ``accept_content``."""


class SecurityError(ProtocolError):
    """A signed message (the ``auth`` serializer) whose signature does not verify: unknown
    or expired signer, or a body that is not what was signed."""


class SerializationError(CarawayError, TypeError):
    """A value the configured serializer cannot encode or decode."""


class TaskError(CarawayError):
    """Base of the errors a task's failure is reported as."""


class WorkerLostError(TaskError):
    """The process running the task exited before the task finished."""


class TimeLimitExceeded(TaskError):
    """The task ran past its hard time limit and was killed."""


class SoftTimeLimitExceeded(TaskError):
    """Raised inside a task at its soft time limit, so it can clean up."""


class TaskRevokedError(TaskError):
    """The task was revoked or expired before it ran."""


class ChordError(TaskError):
    """A chord's header failed, so its body could not run."""


class MaxRetriesExceededError(TaskError):
    """The task asked to retry more often than ``max_retries`` allows."""


class RemoteTaskError(TaskError):
    """A failure whose exception type is not importable in this process.

    Result documents never make a reader import a module (whoever can write the backend
    could otherwise run code in the reader), so an unknown type arrives as this class,
    carrying the original type name, module and arguments.
    """

    def __init__(self, exc_type: str, exc_module: str, exc_args: list[Any]) -> None:
        super().__init__(*exc_args)
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.exc_args = list(exc_args)

    def __str__(self) -> str:
        # The bare message, as Celery's reader shows it (its rebuilt class is a plain
        # Exception subclass); the type is in the class name and exc_module.
        args = self.exc_args
        return str(args[0]) if len(args) == 1 else str(tuple(args))

    def __repr__(self) -> str:
        args = ", ".join(repr(arg) for arg in self.exc_args)
        return f"{self.exc_type}({args})"


class TaskSignal(Exception):
    """Control flow raised by a task to tell the worker what to do with its message."""


class Retry(TaskSignal):
    """Raised by ``Task.retry()``: the task was re-sent and will run again."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message, exc, when)

    def humanize(self) -> str:
        if self.when is None:
            return "now"
        return f"in {self.when:.3g}s"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc is not None:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"


class Reject(TaskSignal):
    """Raised by a task to reject its message, optionally requeueing it."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class Ignore(TaskSignal):
    """Raised by a task so the worker stores no result state for it."""


class AlreadyRegistered(CarawayError):
    """A task of that name is registered already (Celery's name; caraway replaces it)."""


class Terminated(TaskError):
    """The task was terminated (``revoke(terminate=True)``) while it ran."""


# -- warnings ---------------------------------------------------------------------------------


class CarawayWarning(UserWarning):
    """The base of caraway's warnings, to filter them as one (Celery's ``CeleryWarning``)."""


class AlwaysEagerIgnored(CarawayWarning):
    """``send_task`` publishes even with ``task_always_eager``: it has no function to run."""


class DuplicateNodenameWarning(CarawayWarning):
    """Two worker nodes answer to one name; remote control cannot tell them apart."""


class DuplicateTaskNameWarning(CarawayWarning):
    """Two tasks were declared with one name; the later one is registered."""


class FixupWarning(CarawayWarning):
    """A framework fix-up (Django) could not be installed."""


class NotConfigured(CarawayWarning):
    """caraway runs without configuration, on the defaults."""


class SecurityWarning(CarawayWarning):
    """A setting weakens security (pickle accepted, message signing half set up...)."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    """A name that will be deprecated."""


class CDeprecationWarning(DeprecationWarning):
    """A deprecated name, still working."""


def reraise(tp: type[BaseException], value: BaseException, tb: Any = None) -> NoReturn:
    """Raise ``value`` (of type ``tp``) with traceback ``tb``: Celery's helper."""
    if value.__traceback__ is not tb:
        raise value.with_traceback(tb)
    raise value


# -- Celery's names ---------------------------------------------------------------------------
# ``from celery.exceptions import X`` renamed to caraway keeps working for these: each is the
# caraway class that plays that part.

#: the base of every error
CeleryError = CarawayError
#: the base of every warning
CeleryWarning = CarawayWarning
#: what a send that cannot reach the broker raises (kombu's, re-exported by Celery)
OperationalError = BrokerError
#: the base of Retry, Reject and Ignore
TaskPredicate = TaskSignal
#: a message that is not a task caraway can read
InvalidTaskError = ProtocolError
#: the result store failed to read or write
BackendGetMetaError = BackendError
BackendStoreError = BackendError
