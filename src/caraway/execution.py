"""Run one task call, as a worker or eagerly, and report what happened as an Outcome.

This is the only place user code runs. It sets up ``self.request`` and the calling
context (so tasks sent from inside get ``parent_id``/``root_id``), calls the user's hooks,
and turns every way a task can end into data; :mod:`caraway.lifecycle` decides what that
means and the caller applies it (the worker through :mod:`caraway.effects`, eager mode
here). It does no broker I/O of its own: a retry is a message the run hands back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import traceback as tb
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MethodType
from typing import Any

from caraway import exceptions, signals, states
from caraway.canvas import Signature
from caraway.lifecycle import Errbacks, Outcome
from caraway.protocol.message import TaskMessage
from caraway.protocol.serializers import dumps_json
from caraway.publish import signature_list
from caraway.request import Request, pop_current, push_current
from caraway.result import EagerResult
from caraway.taskbase import AppLike, TaskBase
from caraway.utils.einfo import ExceptionInfo

logger = logging.getLogger("caraway.worker")

#: how a follow-up signature is applied: (signature dict, the value it is applied to)
Send = Callable[[Mapping[str, Any], Any], None]


def build_request(
    message: TaskMessage,
    *,
    hostname: str,
    delivery_info: dict[str, Any],
    eager: bool = False,
    properties: dict[str, Any] | None = None,
) -> Request:
    return Request(
        id=message.id,
        task=message.task,
        args=list(message.args),
        kwargs=dict(message.kwargs),
        retries=message.retries,
        is_eager=eager,
        hostname=hostname,
        delivery_info=delivery_info,
        parent_id=message.parent_id,
        root_id=message.root_id,
        group=message.group,
        group_index=message.group_index,
        eta=message.eta,
        expires=message.expires,
        reply_to=message.reply_to,
        correlation_id=message.id,
        origin=message.origin,
        timelimit=(message.time_limit, message.soft_time_limit),
        callbacks=message.callbacks,
        errbacks=message.errbacks,
        chain=message.chain,
        chord=message.chord,
        headers=dict(message.extra_headers),
        ignore_result=bool(message.ignore_result),
        called_directly=False,
        shadow=message.shadow,
        stamped_headers=message.stamped_headers,
        stamps=dict(message.stamps),
        replaced_task_nesting=message.replaced_task_nesting,
        properties=properties if properties is not None else {},
        message=message,
    )


def run_task(task: TaskBase, request: Request) -> Outcome:
    """Call the task body with its hooks; never raises for anything the task does."""
    started = _enter(task, request)
    try:
        soft = soft_limit_of(task, request)
        if soft:
            with soft_time_limit(soft):
                _before_start(task, request)
                value = task.run(*request.args, **request.kwargs)
        else:  # what soft_time_limit(None) does, without its context manager's calls
            _before_start(task, request)
            value = task.run(*request.args, **request.kwargs)
    except Exception as exc:
        outcome = _outcome_of(task, request, exc)
    else:
        outcome = Outcome("success", value=value)
    finally:
        _leave(task)
    return _finish(task, request, outcome, started)


def _before_start(task: TaskBase, request: Request) -> None:
    hook = task.before_start
    if type(hook) is not MethodType or hook.__func__ is not _NO_BEFORE_START:
        hook(request.id or "", request.args, request.kwargs)


#: TaskBase's hooks, which do nothing: a task that keeps them is not called for them
_NO_BEFORE_START = TaskBase.before_start
_NO_ON_SUCCESS = TaskBase.on_success
_NO_AFTER_RETURN = TaskBase.after_return


async def run_task_async(task: TaskBase, request: Request) -> Outcome:
    """The same for an ``async def`` task, awaited on the consumer's event loop.

    Time limits cancel the coroutine: the soft limit raises SoftTimeLimitExceeded, the
    hard limit TimeLimitExceeded, in whichever pool the worker runs.
    """
    started = _enter(task, request)
    soft = soft_limit_of(task, request)
    hard = request.timelimit[0] or task.time_limit or task.app.conf.task_time_limit
    try:
        task.before_start(request.id or "", request.args, request.kwargs)
        value = await _within_limits(task.run(*request.args, **request.kwargs), soft, hard)
    except Exception as exc:
        outcome = _outcome_of(task, request, exc)
    else:
        outcome = Outcome("success", value=value)
    finally:
        _leave(task)
    return _finish(task, request, outcome, started)


async def _within_limits(coroutine: Any, soft: float | None, hard: float | None) -> Any:
    limit = min(value for value in (soft, hard, float("inf")) if value)
    if limit == float("inf"):
        return await coroutine
    try:
        return await asyncio.wait_for(coroutine, limit)
    except asyncio.TimeoutError:
        if soft and limit == soft:
            raise exceptions.SoftTimeLimitExceeded(
                f"soft time limit ({soft}s) exceeded; the coroutine was cancelled"
            ) from None
        raise exceptions.TimeLimitExceeded(
            f"time limit ({hard}s) exceeded; the coroutine was cancelled"
        ) from None


def soft_limit_of(task: TaskBase, request: Request) -> float | None:
    value = request.timelimit[1] or task.soft_time_limit or task.app.conf.task_soft_time_limit
    return float(value) if value else None


def _enter(task: TaskBase, request: Request) -> float:
    request.running_task = task
    task.push_request(request)
    push_current(request)
    if signals.task_prerun.receivers:  # (send would find none to call)
        signals.task_prerun.send(
            sender=task, task_id=request.id, task=task, args=request.args, kwargs=request.kwargs
        )
    return time.perf_counter()


def _leave(task: TaskBase) -> None:
    pop_current()
    task.pop_request()


def _outcome_of(task: TaskBase, request: Request, exc: Exception) -> Outcome:
    if isinstance(exc, exceptions.Retry):
        return Outcome("retry", exc=exc, traceback=tb.format_exc())
    if isinstance(exc, exceptions.Ignore):
        return Outcome("ignore")
    if isinstance(exc, exceptions.Reject):
        return Outcome("reject", exc=exc, requeue=exc.requeue)
    return _failure_or_autoretry(task, request, exc)


def _finish(task: TaskBase, request: Request, outcome: Outcome, started: float) -> Outcome:
    outcome.runtime = time.perf_counter() - started
    outcome.children = request.headers.get("_children")
    outcome.resends = list(request.resends)
    _check_storable(task, request, outcome)
    _run_hooks(task, request, outcome)
    _send_signals(task, request, outcome)
    return outcome


#: return types JSON stores as they are: no need to try encoding them first
_PLAIN = frozenset({type(None), bool, int, float, str})


def _check_storable(task: TaskBase, request: Request, outcome: Outcome) -> None:
    """Turn a return value the result document cannot hold into the task's FAILURE.

    Found here, before hooks and signals, the task fails like any other; found later,
    when the worker writes the result, it would take the consumer down with it.
    """
    if outcome.kind != "success" or type(outcome.value) in _PLAIN or request.is_eager:
        return  # eager results stay in this process, as Celery's do
    if request.ignore_result and not (request.callbacks or request.chain or request.chord):
        return
    try:
        dumps_json(outcome.value)
    except exceptions.SerializationError as exc:
        error = exceptions.SerializationError(
            f"task {task.name} returned a value that cannot be stored as its result: {exc}"
        )
        outcome.kind, outcome.value, outcome.exc = "failure", None, error
        outcome.traceback = "".join(tb.format_exception_only(type(error), error))


def _send_signals(task: TaskBase, request: Request, outcome: Outcome) -> None:
    if outcome.kind == "success":
        if signals.task_success.receivers:  # (send would find none to call)
            signals.task_success.send(sender=task, result=outcome.value, runtime=outcome.runtime)
    elif outcome.kind == "failure":
        signals.task_failure.send(
            sender=task,
            task_id=request.id,
            exception=outcome.exc,
            args=request.args,
            kwargs=request.kwargs,
            traceback=outcome.traceback,
            einfo=_einfo(outcome),
        )
    elif outcome.kind == "retry":
        signals.task_retry.send(
            sender=task,
            request=request,
            reason=getattr(outcome.exc, "exc", None) or outcome.exc,
            einfo=_einfo(outcome),
        )
    if not signals.task_postrun.receivers:
        return
    signals.task_postrun.send(
        sender=task,
        task_id=request.id,
        task=task,
        args=request.args,
        kwargs=request.kwargs,
        retval=outcome.value,
        state=outcome.state,
    )


@contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in the task after ``seconds`` (main thread only).

    Signals reach only the main thread, which is where prefork children run tasks; the
    threads pool cannot interrupt a running thread, so there the limit is not enforced.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise exceptions.SoftTimeLimitExceeded(f"soft time limit ({seconds}s) exceeded")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _failure_or_autoretry(task: TaskBase, request: Request, exc: Exception) -> Outcome:
    trace = tb.format_exc()
    if (
        task.autoretry_for
        and isinstance(exc, task.autoretry_for)
        and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
    ):
        task.push_request(request)
        push_current(request)
        try:
            options = dict(task.retry_kwargs)
            if task.retry_backoff and "countdown" not in options:
                options["countdown"] = task.backoff_delay(request.retries)
            task.retry(exc=exc, **options)
        except exceptions.Retry as retry:
            return Outcome("retry", exc=retry, traceback=trace)
        except Exception as final:
            return Outcome("failure", exc=final, traceback=tb.format_exc())
        finally:
            pop_current()
            task.pop_request()
    return Outcome("failure", exc=exc, traceback=trace)


def _einfo(outcome: Outcome) -> ExceptionInfo | None:
    """What hooks and signals get as ``einfo``: Celery's ExceptionInfo, not a string."""
    if outcome.exc is None:
        return None
    return ExceptionInfo.from_exception(outcome.exc, outcome.traceback)


def _run_hooks(task: TaskBase, request: Request, outcome: Outcome) -> None:
    """User hooks; an exception in one is logged as the task's failure, never lost."""
    if outcome.kind == "success":
        on_success, after_return = task.on_success, task.after_return
        if (
            type(on_success) is MethodType
            and on_success.__func__ is _NO_ON_SUCCESS
            and type(after_return) is MethodType
            and after_return.__func__ is _NO_AFTER_RETURN
        ):
            return  # TaskBase's, which do nothing: no request to push for them
    task_id, args, kwargs = request.id or "", request.args, request.kwargs
    einfo = _einfo(outcome)
    task.push_request(request)
    try:
        if outcome.kind == "success":
            task.on_success(outcome.value, task_id, args, kwargs)
        elif outcome.kind == "failure" and outcome.exc is not None:
            task.on_failure(outcome.exc, task_id, args, kwargs, einfo)
        elif outcome.kind == "retry" and outcome.exc is not None:
            cause = getattr(outcome.exc, "exc", None) or outcome.exc
            task.on_retry(cause, task_id, args, kwargs, einfo)
        retval = outcome.value if outcome.kind == "success" else outcome.exc
        task.after_return(outcome.state, retval, task_id, args, kwargs, einfo)
    except Exception as exc:
        outcome.kind = "failure"
        outcome.exc = exc
        outcome.traceback = tb.format_exc()
    finally:
        task.pop_request()


def started_meta(hostname: str) -> dict[str, Any]:
    """The ``result`` Celery stores with STARTED."""
    return {"pid": os.getpid(), "hostname": hostname}


# -- errbacks, in the worker and eagerly ---------------------------------------------------
def fire_errbacks(app: AppLike, errbacks: Errbacks, *, send: Send) -> None:
    """Celery's rule for a failed task's ``link_error``: an errback task that takes more
    than one argument is called here as ``errback(request, exc, traceback)``; any other is
    applied with the failed task's id, through ``send``. An errback's own failure is logged,
    never raised: it must not change the failed task's outcome."""
    failed = errbacks.failed
    for signature in errbacks.signatures:
        task = app.tasks.get(str(signature.get("task")))
        if task is None or not task.takes_request():
            send(signature, failed.id)
            continue
        request = build_request(failed, hostname="", delivery_info={})
        args = list(signature.get("args") or ())
        if not signature.get("immutable"):  # Celery calls the signature: .si() keeps its own
            args = [request, errbacks.exc, errbacks.traceback, *args]
        try:
            task(*args, **dict(signature.get("kwargs") or {}))
        except Exception:
            logger.exception("errback %s for task %s raised", task.name, failed.id)


# -- eager mode --------------------------------------------------------------------------
def run_eagerly(
    task: TaskBase, args: tuple[Any, ...], kwargs: dict[str, Any], options: Mapping[str, Any]
) -> EagerResult:
    """Run ``task`` here as a worker would, retries in place, then its callbacks, chain
    and errbacks (applied as Celery's eager trace applies them: ``apply_async``, which runs
    them here too under ``task_always_eager``). Raises with ``task_eager_propagates``."""
    task_id = options.get("task_id") or str(uuid.uuid4())
    message = TaskMessage(
        id=task_id,
        task=task.name,
        args=list(args),
        kwargs=dict(kwargs),
        retries=int(options.get("retries") or 0),
        root_id=options.get("root_id") or task_id,
        parent_id=options.get("parent_id"),
        callbacks=signature_list(options.get("link")),
        errbacks=signature_list(options.get("link_error")),
        chain=options.get("chain"),
        extra_headers=dict(options.get("headers") or {}),
    )
    while True:
        request = build_request(message, hostname="eager", delivery_info={}, eager=True)
        outcome = run_task(task, request)
        if outcome.kind != "retry":
            break
        message.retries += 1
    app = task.app
    _follow_eagerly(app, message, outcome)
    if outcome.kind == "success":
        return EagerResult(task_id, outcome.value, states.SUCCESS, app=app, task_name=task.name)
    exc = outcome.exc
    if app.conf.task_eager_propagates and exc is not None and outcome.kind == "failure":
        raise exc
    state = states.FAILURE if outcome.kind == "failure" else outcome.state
    return EagerResult(
        task_id, exc, state, app=app, traceback=outcome.traceback, task_name=task.name
    )


def _follow_eagerly(app: AppLike, message: TaskMessage, outcome: Outcome) -> None:
    lineage: dict[str, Any] = {"parent_id": message.id, "root_id": message.root_id}

    def send(signature: Mapping[str, Any], value: Any, **options: Any) -> None:
        Signature.from_dict(signature, app=app).apply_async((value,), **lineage, **options)

    if outcome.kind == "success":
        for callback in message.callbacks or ():
            send(callback, outcome.value)
        if message.chain:
            *rest, step = message.chain
            send(step, outcome.value, chain=rest or None)
    elif outcome.kind == "failure" and message.errbacks and outcome.exc is not None:
        failed = Errbacks(list(message.errbacks), message, outcome.exc, outcome.traceback)
        fire_errbacks(app, failed, send=send)
