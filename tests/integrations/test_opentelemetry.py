"""Tracing with the OpenTelemetry SDK's in-memory exporter: a span per publish and per run,
parent and child across the message, through retries, chains, groups, chords, subtasks
and async sends, with the task's name, id, queue, retries and outcome."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from caraway import Caraway, chain, chord, group
from caraway.testing import TestWorker
from tests.helpers import Worker, wait_until, write_project
from tests.integrations.conftest import Traces


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.context is not None and parent.context is not None
    same_trace = child.context.trace_id == parent.context.trace_id
    return same_trace and parent_of(child) == parent.context.span_id


@pytest.fixture
def tasks(caraway_app: Caraway) -> dict[str, Any]:
    @caraway_app.task(name="otel.add")
    def add(x: int, y: int) -> int:
        return x + y

    @caraway_app.task(name="otel.tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    @caraway_app.task(name="otel.boom")
    def boom() -> None:
        raise ValueError("kaboom")

    @caraway_app.task(name="otel.traceparent", bind=True)
    def traceparent(self: Any) -> Any:
        return self.request.headers.get("traceparent")

    @caraway_app.task(name="otel.flaky", bind=True, max_retries=2)
    def flaky(self: Any) -> int:
        if self.request.retries == 0:
            raise self.retry(exc=KeyError("again"), countdown=0)
        return self.request.retries

    @caraway_app.task(name="otel.parent", bind=True)
    def parent(self: Any) -> str:
        return add.delay(1, 1).id

    return {
        "add": add,
        "tsum": tsum,
        "boom": boom,
        "traceparent": traceparent,
        "flaky": flaky,
        "parent": parent,
    }


def test_a_publish_and_its_run_are_parent_and_child_with_the_tasks_attributes(
    traces: Traces, caraway_worker: TestWorker, tasks: dict[str, Any]
) -> None:
    with traces.tracer.start_as_current_span("request") as request:
        result = tasks["add"].delay(2, 2)
    assert result.get(timeout=10) == 4
    publish, run = traces.one("apply_async/otel.add"), traces.one("run/otel.add")
    assert publish.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert parent_of(publish) == request.get_span_context().span_id
    assert is_child(run, publish)
    assert run.attributes is not None
    assert {
        "celery.action": "run",
        "celery.task_name": "otel.add",
        "messaging.message.id": result.id,
        "messaging.destination": "celery",
        "celery.retries": 0,
        "celery.state": "SUCCESS",
    }.items() <= dict(run.attributes).items()
    assert run.status.status_code is StatusCode.UNSET


def test_the_message_carries_a_w3c_traceparent(
    traces: Traces, caraway_worker: TestWorker, tasks: dict[str, Any]
) -> None:
    header = tasks["traceparent"].delay().get(timeout=10)
    publish = traces.one("apply_async/otel.traceparent")
    assert publish.context is not None
    trace_id, span_id = f"{publish.context.trace_id:032x}", f"{publish.context.span_id:016x}"
    assert header.startswith(f"00-{trace_id}-{span_id}-")  # then the flags: sampled, ...


def test_a_failure_is_an_error_span_with_the_exception(
    traces: Traces, caraway_worker: TestWorker, tasks: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        tasks["boom"].delay().get(timeout=10)
    run = traces.one("run/otel.boom")
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None and run.attributes["celery.state"] == "FAILURE"
    assert [event.name for event in run.events] == ["exception"]


def test_a_retry_continues_the_trace_from_the_run_that_asked_for_it(
    traces: Traces, caraway_worker: TestWorker, tasks: dict[str, Any]
) -> None:
    assert tasks["flaky"].delay().get(timeout=10) == 1
    runs = wait_until(
        lambda: len(traces.named("run/otel.flaky")) == 2 and traces.named("run/otel.flaky")
    )
    first, second = sorted(runs, key=lambda span: span.start_time or 0)
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["celery.state"] == "RETRY"
    assert "again" in str(first.attributes["celery.retry.reason"])
    assert second.attributes["celery.retries"] == 1
    republish = [s for s in traces.named("apply_async/otel.flaky") if is_child(s, first)]
    assert len(republish) == 1 and is_child(second, republish[0])


def test_a_chain_is_one_trace_each_step_the_child_of_the_one_before(
    traces: Traces, caraway_worker: TestWorker, tasks: dict[str, Any]
) -> None:
    add = tasks["add"]
    with traces.tracer.start_as_current_span("request"):
        result = chain(add.s(1, 1), add.s(2), add.s(3)).apply_async()
    assert result.get(timeout=10) == 7
    runs = wait_until(
        lambda: len(traces.named("run/otel.add")) == 3 and traces.named("run/otel.add")
    )
    runs.sort(key=lambda span: span.start_time or 0)
    publishes = traces.named("apply_async/otel.add")
    for before, after in itertools.pairwise(runs):
        step = [p for p in publishes if is_child(p, before)]
        assert len(step) == 1 and is_child(after, step[0])
    assert len({span.context.trace_id for span in traces.spans() if span.context}) == 1


def test_a_group_and_a_chord_stay_in_the_callers_trace(
    traces: Traces, caraway_worker: TestWorker, tasks: dict[str, Any]
) -> None:
    add, tsum = tasks["add"], tasks["tsum"]
    with traces.tracer.start_as_current_span("request") as request:
        members = group(add.s(i, i) for i in range(3)).apply_async()
        joined = chord(add.s(i, i) for i in range(3))(tsum.s())
    assert members.get(timeout=10) == [0, 2, 4]
    assert joined.get(timeout=10) == 6
    body = traces.one("run/otel.tsum")
    trace_id = request.get_span_context().trace_id
    assert all(span.context and span.context.trace_id == trace_id for span in traces.spans())
    member_publishes = [
        s
        for s in traces.named("apply_async/otel.add")
        if parent_of(s) == request.get_span_context().span_id
    ]
    assert len(member_publishes) == 6  # every member, of the group and of the chord's header
    body_publish = traces.one("apply_async/otel.tsum")
    assert is_child(body, body_publish)
    header_runs = traces.named("run/otel.add")
    assert any(is_child(body_publish, run) for run in header_runs)  # sent by the last one


def test_a_task_sent_from_a_running_task_is_its_child(
    traces: Traces, caraway_worker: TestWorker, tasks: dict[str, Any]
) -> None:
    child_id = tasks["parent"].delay().get(timeout=10)
    caraway_worker.app.AsyncResult(child_id).get(timeout=10)
    parent_run = traces.one("run/otel.parent")
    child_publish = traces.one("apply_async/otel.add")
    assert is_child(child_publish, parent_run)
    assert is_child(traces.one("run/otel.add"), child_publish)


def test_an_async_send_is_the_child_of_the_awaiting_coroutines_span(
    traces: Traces, caraway_worker: TestWorker, tasks: dict[str, Any]
) -> None:
    async def handler(n: int) -> str:
        with traces.tracer.start_as_current_span(f"handler-{n}"):
            result = await tasks["add"].adelay(n, n)
        await result
        return result.id

    async def main() -> list[str]:
        return await asyncio.gather(*(handler(n) for n in range(5)))

    ids = asyncio.run(main())
    publishes = traces.named("apply_async/otel.add")
    for n, task_id in enumerate(ids):
        handler_span = traces.one(f"handler-{n}")
        [publish] = [
            p for p in publishes if p.attributes and p.attributes["messaging.message.id"] == task_id
        ]
        assert is_child(publish, handler_span)


def test_eager_runs_are_children_of_the_caller(
    traces: Traces, caraway_app: Caraway, tasks: dict[str, Any]
) -> None:
    with traces.tracer.start_as_current_span("request") as request:
        assert tasks["add"].apply((3, 4)).get() == 7
    run = traces.one("run/otel.add")
    assert parent_of(run) == request.get_span_context().span_id
    assert traces.named("apply_async/otel.add") == []  # nothing was published


TRACED_APP = """
import json
import os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from caraway import Caraway
from caraway.contrib.opentelemetry import CarawayInstrumentor


class FileExporter(SpanExporter):
    def export(self, spans):
        with open(os.environ['TEST_SPANS'], 'a') as out:
            for span in spans:
                out.write(json.dumps({'name': span.name, 'pid': os.getpid()}) + '\\n')
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(FileExporter(), schedule_delay_millis=60_000))
CarawayInstrumentor().instrument(tracer_provider=provider)

app = Caraway('proj', include=['proj.tasks'])
"""


def test_a_prefork_child_exports_its_spans_before_it_exits(tmp_path: Path) -> None:
    """Children leave with os._exit: without the flush at worker_process_shutdown, spans
    a batch processor holds (here for a minute) would be lost."""
    spans = tmp_path / "spans.jsonl"
    base = write_project(tmp_path, app_source=TRACED_APP)
    node = Worker(base, "-c", "1", env={"TEST_SPANS": str(spans)})
    client = Caraway(
        "proj-client", broker=f"sqlite:///{base}/proj/caraway.sqlite3", set_as_current=False
    )
    client.conf.result_backend = client.broker_url
    try:
        node.wait_ready()
        assert client.send_task("proj.tasks.add", (2, 2)).get(timeout=20) == 4
        children = node.children()
    finally:
        node.stop()
        client.close()
    exported = [json.loads(line) for line in spans.read_text().splitlines()]
    assert {"name": "run/proj.tasks.add", "pid": children[0]} in exported
