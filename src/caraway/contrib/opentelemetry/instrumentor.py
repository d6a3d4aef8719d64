"""CarawayInstrumentor: spans from caraway's publish and task signals, as the OpenTelemetry
Celery instrumentation makes them, so a Celery peer instrumented with it shares the traces.

A publish is a PRODUCER span ``apply_async/<task>`` whose context is injected into the
message's headers (``traceparent``, ``tracestate``: the global propagator's, W3C by
default); a run is a CONSUMER span ``run/<task>`` whose parent is extracted from them and
which is current while the task runs, so what it sends is its child. The one thing to know:
a worker publishes a chain's next step, a callback or a chord's body after the run that
caused it has ended, so a publish with no current span takes as parent the recently
finished run its message names as ``parent_id``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode

from caraway import signals
from caraway._version import __version__

logger = logging.getLogger("caraway.opentelemetry")

# attribute names as the OpenTelemetry Celery instrumentation writes them
ACTION = "celery.action"
TASK_NAME = "celery.task_name"
MESSAGE_ID = "messaging.message.id"
DESTINATION = "messaging.destination"
RETRIES = "celery.retries"
STATE = "celery.state"
HOSTNAME = "celery.hostname"
RETRY_REASON = "celery.retry.reason"

#: finished runs remembered as parents for what the worker publishes after them
REMEMBERED_RUNS = 10_000
#: publishes between before_ and after_task_publish at once (a failed publish never ends)
OPEN_PUBLISHES = 10_000


class CarawayInstrumentor:
    """``CarawayInstrumentor().instrument(tracer_provider=...)``, once per process (the
    producer's and every worker's: a prefork worker's children inherit it);
    ``CarawayInstrumentor().uninstrument()`` disconnects it. One instance per process, as
    ``CeleryInstrumentor`` is, whose calls these mirror."""

    _instance: CarawayInstrumentor | None = None
    _ready = False

    def __new__(cls) -> CarawayInstrumentor:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __init__(self) -> None:
        if self._ready:
            return
        self._ready = True
        self._tracer: trace.Tracer | None = None
        self._provider: trace.TracerProvider | None = None
        self._lock = threading.Lock()
        #: id(headers) -> the publish span, between before_ and after_task_publish
        self._publishing: OrderedDict[int, Span] = OrderedDict()
        #: task id -> (run span, context token), between task_prerun and task_postrun
        self._running: dict[str, tuple[Span, Token[otel_context.Context]]] = {}
        self._finished: OrderedDict[str, SpanContext] = OrderedDict()

    @property
    def is_instrumented(self) -> bool:
        return self._tracer is not None

    def instrument(self, *, tracer_provider: trace.TracerProvider | None = None) -> None:
        """Start tracing; the global tracer provider unless one is given. Idempotent."""
        if self._tracer is not None:
            return
        self._provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = trace.get_tracer(__name__, __version__, self._provider)
        signals.worker_process_shutdown.connect(self._flush, weak=False)
        signals.before_task_publish.connect(self._before_publish, weak=False)
        signals.after_task_publish.connect(self._after_publish, weak=False)
        signals.task_prerun.connect(self._prerun, weak=False)
        signals.task_failure.connect(self._failure, weak=False)
        signals.task_retry.connect(self._retry, weak=False)
        signals.task_postrun.connect(self._postrun, weak=False)

    def uninstrument(self) -> None:
        """Stop tracing; spans still open are ended."""
        for signal, receiver in (
            (signals.worker_process_shutdown, self._flush),
            (signals.before_task_publish, self._before_publish),
            (signals.after_task_publish, self._after_publish),
            (signals.task_prerun, self._prerun),
            (signals.task_failure, self._failure),
            (signals.task_retry, self._retry),
            (signals.task_postrun, self._postrun),
        ):
            signal.disconnect(receiver)
        with self._lock:
            open_spans = [*self._publishing.values(), *(s for s, _ in self._running.values())]
            self._publishing.clear()
            self._running.clear()
            self._finished.clear()
        for span in open_spans:
            span.end()
        self._tracer = self._provider = None

    def _flush(self, **_: Any) -> None:
        """A prefork child leaves with ``os._exit``: export what its processors still hold."""
        flush = getattr(self._provider, "force_flush", None)
        if flush is not None:
            try:
                flush()
            except Exception:
                logger.exception("could not export the last spans of this process")

    # -- publishing ------------------------------------------------------------------------
    def _before_publish(
        self,
        sender: Any = None,
        headers: dict[str, Any] | None = None,
        routing_key: str | None = None,
        **_: Any,
    ) -> None:
        tracer = self._tracer
        if tracer is None or headers is None:
            return
        name = str(headers.get("task") or sender)
        span = tracer.start_span(
            f"apply_async/{name}",
            context=self._publish_parent(headers),
            kind=SpanKind.PRODUCER,
            attributes={
                ACTION: "apply_async",
                TASK_NAME: name,
                MESSAGE_ID: str(headers.get("id")),
                DESTINATION: routing_key or "",
                RETRIES: int(headers.get("retries") or 0),
            },
        )
        propagate.inject(headers, context=trace.set_span_in_context(span))
        with self._lock:
            self._publishing[id(headers)] = span
            stale = _overflow(self._publishing, OPEN_PUBLISHES)
        for old in stale:
            old.set_status(Status(StatusCode.ERROR, "the publish did not complete"))
            old.end()

    def _publish_parent(self, headers: dict[str, Any]) -> otel_context.Context | None:
        """The current context, or else the finished run this message follows from."""
        if trace.get_current_span().get_span_context().is_valid:
            return None  # the current span: the caller's, or the running task's
        with self._lock:
            parent = self._finished.get(str(headers.get("parent_id")))
        if parent is None:
            return None
        return trace.set_span_in_context(NonRecordingSpan(parent))

    def _after_publish(self, headers: dict[str, Any] | None = None, **_: Any) -> None:
        with self._lock:
            span = self._publishing.pop(id(headers), None)
        if span is not None:
            span.end()

    # -- running ---------------------------------------------------------------------------
    def _prerun(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        tracer = self._tracer
        if tracer is None or task_id is None or task is None:
            return
        request = task.request
        carrier = dict(getattr(request, "headers", None) or {})
        # a worker's thread has no context of its own; an eager run continues its caller's
        parent = propagate.extract(carrier, context=otel_context.get_current())
        delivery = getattr(request, "delivery_info", None) or {}
        span = tracer.start_span(
            f"run/{task.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                ACTION: "run",
                TASK_NAME: str(task.name),
                MESSAGE_ID: str(task_id),
                DESTINATION: str(delivery.get("routing_key") or ""),
                RETRIES: int(getattr(request, "retries", 0) or 0),
                HOSTNAME: str(getattr(request, "hostname", None) or ""),
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        with self._lock:
            self._running[task_id] = (span, token)

    def _failure(
        self, task_id: str | None = None, exception: BaseException | None = None, **_: Any
    ) -> None:
        span = self._run_span(task_id)
        if span is None:
            return
        if exception is not None:
            span.record_exception(exception)
        description = f"{type(exception).__name__}: {exception}" if exception else None
        span.set_status(Status(StatusCode.ERROR, description))

    def _retry(self, request: Any = None, reason: Any = None, **_: Any) -> None:
        span = self._run_span(getattr(request, "id", None))
        if span is not None:
            span.set_attribute(RETRY_REASON, str(reason))

    def _postrun(self, task_id: str | None = None, state: str | None = None, **_: Any) -> None:
        if task_id is None:
            return
        with self._lock:
            entry = self._running.pop(task_id, None)
        if entry is None:
            return
        span, token = entry
        span.set_attribute(STATE, str(state))
        try:
            otel_context.detach(token)
        finally:
            span.end()
        with self._lock:
            self._finished[task_id] = span.get_span_context()
            self._finished.move_to_end(task_id)
            _overflow(self._finished, REMEMBERED_RUNS)

    def _run_span(self, task_id: str | None) -> Span | None:
        with self._lock:
            entry = self._running.get(task_id or "")
        return entry[0] if entry is not None else None


def _overflow(entries: OrderedDict[Any, Any], limit: int) -> list[Any]:
    """Drop the oldest entries past ``limit``; returns what was dropped."""
    dropped = []
    while len(entries) > limit:
        dropped.append(entries.popitem(last=False)[1])
    return dropped
