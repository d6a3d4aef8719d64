"""Tracing with OpenTelemetry (``pip install 'caraway[opentelemetry]'``): a span for each
task message published and each task run, linked across processes by W3C ``traceparent``
in the message headers. docs/opentelemetry.md shows the set-up.
"""

from __future__ import annotations

from caraway.contrib.opentelemetry.instrumentor import CarawayInstrumentor

__all__ = ["CarawayInstrumentor"]
