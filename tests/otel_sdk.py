"""The OpenTelemetry SDK for a test: in-memory spans and metrics, the global providers reset after.

The API lets a process set its global providers once; opentelemetry-test-utils resets them,
and :func:`jr_checkpoint.telemetry.reset` makes the library take the new ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.test.globals_test import reset_metrics_globals, reset_trace_globals

from jr_checkpoint import telemetry


@dataclass
class Sdk:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def finished(self, name: str | None = None) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> dict[frozenset, Any]:
        """The data points of ``metric``: attributes -> the value (a sum) or the histogram point."""
        found: dict[frozenset, Any] = {}
        data = self.reader.get_metrics_data()
        for resource in (data.resource_metrics if data else ()):
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        for point in item.data.data_points:
                            value = getattr(point, "value", point)
                            found[frozenset(point.attributes.items())] = value
        return found


def unset() -> None:
    """No providers set, as in a process that never configured an SDK."""
    reset_trace_globals()
    reset_metrics_globals()
    telemetry.reset()


@contextlib.contextmanager
def sdk() -> Iterator[Sdk]:
    unset()
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield Sdk(spans, reader)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        unset()
