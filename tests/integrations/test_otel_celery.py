"""Traces across caraway and Celery 5.7 traced by the official OpenTelemetry Celery
instrumentation, both ways, on Redis (db 6, queue otel-interop): the run on one side is
the child of the publish on the other, in the same trace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from caraway import Caraway
from caraway.testing import TestApp, start_worker
from tests.helpers import purge_queue, wait_until
from tests.integrations.conftest import Traces
from tests.interop.celeryproc import CeleryWorker, celery_module, require_celery

URL = "redis://127.0.0.1:6379/6"
QUEUE = "otel-interop"

CELERY_APP = '''
import json
import os

from celery import Celery
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

app = Celery("otelproj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BROKER"])
app.conf.update(task_default_queue="otel-interop", broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)


@app.task(name="otel.add")
def add(x, y):
    return x + y


class FileExporter(SpanExporter):
    """One JSON line per span, for the test to read."""

    def export(self, spans):
        with open(os.environ["TEST_SPANS"], "a") as out:
            for span in spans:
                parent = span.parent.span_id if span.parent else None
                out.write(json.dumps({"name": span.name, "trace": span.context.trace_id,
                                      "span": span.context.span_id, "parent": parent}) + "\\n")
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


if os.environ.get("TEST_SPANS"):  # the worker traces itself; a client is traced by the test
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    CeleryInstrumentor().instrument(tracer_provider=provider)
'''


@pytest.fixture
def celery_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    require_celery()
    (tmp_path / "celerytraced.py").write_text(CELERY_APP)
    monkeypatch.setenv("TEST_BROKER", URL)
    monkeypatch.syspath_prepend(str(tmp_path))
    client = Caraway("otel-purge", broker=URL, set_as_current=False)
    purge_queue(client, QUEUE)
    try:
        yield tmp_path
    finally:
        purge_queue(client, QUEUE)
        client.close()


def test_a_celery_worker_continues_a_trace_a_caraway_producer_started(
    traces: Traces, celery_project: Path
) -> None:
    spans_file = celery_project / "spans.jsonl"
    worker = CeleryWorker(
        celery_project, "celerytraced", queues=[QUEUE], env={"TEST_SPANS": str(spans_file)}
    )
    producer = Caraway("otel-producer", broker=URL, backend=URL, set_as_current=False)
    producer.conf.task_default_queue = QUEUE
    try:
        worker.wait_ready()
        with traces.tracer.start_as_current_span("request"):
            result = producer.send_task("otel.add", (2, 3))
        assert result.get(timeout=20) == 5

        def celery_run() -> Any:
            lines = spans_file.read_text().splitlines() if spans_file.exists() else []
            runs = [json.loads(line) for line in lines if '"run/otel.add"' in line]
            return runs[0] if runs else None

        run = wait_until(celery_run, timeout=20, message="the Celery worker's run span")
    finally:
        worker.stop()
        producer.close()
    publish = traces.one("apply_async/otel.add")
    assert publish.context is not None
    assert run["trace"] == publish.context.trace_id
    assert run["parent"] == publish.context.span_id


def test_a_caraway_worker_continues_a_trace_a_celery_producer_started(
    traces: Traces, celery_project: Path
) -> None:
    app = TestApp({"broker_url": URL, "result_backend": URL, "task_default_queue": QUEUE})

    @app.task(name="otel.add")
    def add(x: int, y: int) -> int:
        return x + y

    celery_side = CeleryInstrumentor()
    celery_side.instrument(tracer_provider=traces.provider)
    try:
        with start_worker(app), celery_module("celerytraced") as module:
            with traces.tracer.start_as_current_span("request"):
                result = module.add.delay(2, 3)
            assert result.get(timeout=20) == 5
            run = traces.one("run/otel.add")
    finally:
        celery_side.uninstrument()
        app.close()
    publish = traces.one("apply_async/otel.add")  # made by the Celery instrumentation
    assert publish.context is not None and run.context is not None
    assert run.context.trace_id == publish.context.trace_id
    assert run.parent is not None and run.parent.span_id == publish.context.span_id
