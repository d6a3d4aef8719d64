"""Fixtures the integration tests share: OpenTelemetry's SDK with an in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from caraway.contrib.opentelemetry import CarawayInstrumentor
from tests.helpers import wait_until


class Traces:
    """What the SDK exported, by span name; a tracer for the test's own spans."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.provider = provider
        self.exporter = exporter
        self.tracer = provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        # the test worker's ping at start is a trace of its own
        return [s for s in self.exporter.get_finished_spans() if "celery.ping" not in s.name]

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = wait_until(lambda: self.named(name), timeout=10, message=f"span {name}")
        assert len(found) == 1, [span.name for span in self.spans()]
        return found[0]


@pytest.fixture
def traces() -> Iterator[Traces]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = CarawayInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield Traces(provider, exporter)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
