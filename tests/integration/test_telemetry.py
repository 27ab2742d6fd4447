"""Spans and metrics from the real decorator on the host stand-in, on real PostgreSQL.

A test opens the worker's ``ganuda.jr.task`` span around ``process_queue_task(task)`` as
``jr_queue_worker.py`` does; jr-checkpoint's spans must be its children. Once the same run
goes through the OTLP/HTTP exporters, configured as ``lib/ganuda_otel.py`` configures them,
to a receiver on 127.0.0.1 that parses what it gets.
"""

from __future__ import annotations

import gzip
import http.server
import importlib
import queue
import threading
import time

import pytest
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import jr_checkpoint
from jr_checkpoint import CheckpointStore
from tests.otel_sdk import sdk, unset

TASK_ID = 2718
OUTCOME = "jr_checkpoint.outcome"

INSTRUCTION = """# Jr Instruction: hello

Create `app/hello.py`:

```python
print('hi')
```

Run the check:

```bash
echo check >> journal.txt && test -f go.flag
```
"""


@pytest.fixture
def host(host_db, tmp_path):
    """The host stand-in's executor with jr-checkpoint installed as on the host (no argument)."""
    (tmp_path / "app").mkdir()
    jr_checkpoint.install()
    try:
        yield importlib.import_module("task_executor").TaskExecutor()
    finally:
        jr_checkpoint.uninstall()


def run_as_the_worker(executor, task_id=TASK_ID):
    """process_queue_task under a ganuda.jr.task span, as jr_queue_worker.py runs it."""
    task = {"id": task_id, "task_id": f"JR-{task_id}", "title": "hello", "instruction_content": INSTRUCTION}
    with trace.get_tracer("ganuda").start_as_current_span("ganuda.jr.task") as span:
        span.set_attribute("jr.task_id", task_id)
        return executor.process_queue_task(task), span.get_span_context()


def test_spans_of_a_failed_task_and_its_resumed_retry_are_under_the_workers_span(host, tmp_path):
    with sdk() as otel:
        first, first_task = run_as_the_worker(host)
        assert not first["success"]
        (tmp_path / "go.flag").touch()
        second, second_task = run_as_the_worker(host)
        assert second["success"], second

        calls = otel.finished("jr_checkpoint.task")
        assert [c.parent.span_id for c in calls] == [first_task.span_id, second_task.span_id]
        assert [dict(c.attributes) for c in calls] == [
            {"jr_checkpoint.task_id": TASK_ID, OUTCOME: "failed"},
            {"jr_checkpoint.task_id": TASK_ID, OUTCOME: "finished"},
        ]
        steps = otel.finished("jr_checkpoint.step")
        by_call = [[s for s in steps if s.parent.span_id == c.context.span_id] for c in calls]
        described = [[(s.attributes["jr_checkpoint.step_number"], s.attributes["jr_checkpoint.step_type"],
                       s.attributes[OUTCOME]) for s in call] for call in by_call]
        assert described == [[(0, "file", "success"), (1, "bash", "failed")],
                             [(0, "file", "skipped"), (1, "bash", "success")]]
        assert all(s.attributes["jr_checkpoint.task_id"] == TASK_ID for s in steps)
        skipped = by_call[1][0]
        assert skipped.start_time == skipped.end_time
        assert all(s.context.trace_id == c.context.trace_id for c, call in zip(calls, by_call, strict=True)
                   for s in call)

        assert {dict(k)[OUTCOME]: v for k, v in otel.points("jr_checkpoint.steps").items()} == {
            "success": 2, "failed": 1, "skipped": 1}
        (latency,) = otel.points("jr_checkpoint.record.duration").values()
        assert latency.count == 3  # one record per executed step
        assert otel.points("jr_checkpoint.lease_losses") == {}
        assert otel.points("jr_checkpoint.unchecked_calls") == {}


def test_the_ledger_down_makes_the_calls_steps_unchecked(host_db):
    """An unreachable ledger (outage=0: no riding it out): the call and its steps are unchecked."""
    down = CheckpointStore("host=127.0.0.1 port=1 dbname=down connect_timeout=2", outage=0)
    jr_checkpoint.install(store=down)
    try:
        with sdk() as otel:
            result, _ = run_as_the_worker(importlib.import_module("task_executor").TaskExecutor())
            assert not result["success"]  # go.flag is missing: the task fails, as without us
            (call,) = otel.finished("jr_checkpoint.task")
            assert call.attributes[OUTCOME] == "unchecked"
            assert [s.attributes[OUTCOME] for s in otel.finished("jr_checkpoint.step")] == ["unchecked"] * 2
            assert otel.points("jr_checkpoint.outages") == {frozenset(): 1}
            unchecked = otel.points("jr_checkpoint.unchecked_calls")
            assert {dict(k)["jr_checkpoint.reason"]: v for k, v in unchecked.items()} == {"ledger_failed": 1}
            assert [e.name for e in call.events] == ["jr_checkpoint.unchecked", "jr_checkpoint.outage"]
    finally:
        jr_checkpoint.uninstall()
        down.close()


class Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: each POST's path and body go to the server's queue."""

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.received.put((self.path, self.headers.get("Content-Type"), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.received = queue.Queue()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def received(server, path, timeout=10.0):
    """The first body POSTed to ``path`` within ``timeout`` seconds (bodies POSTed to other
    paths before it are dropped); a blocking wait on the receiver's queue, not a poll."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got_path, content_type, body = server.received.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"timed out after {timeout:g} s waiting for a POST to {path}", pytrace=False)
        if got_path == path:
            assert content_type == "application/x-protobuf"
            return body


def test_spans_and_metrics_reach_an_otlp_http_receiver(host, receiver):
    """The host's exporters (as lib/ganuda_otel.py configures them) to a receiver on loopback."""
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    unset()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), schedule_delay_millis=60000))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
                                           export_interval_millis=60000)
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        result, task_span = run_as_the_worker(host)
        assert not result["success"]
        assert tracer_provider.force_flush(timeout_millis=10000)
        assert meter_provider.force_flush(timeout_millis=10000)
        traces = ExportTraceServiceRequest.FromString(received(receiver, "/v1/traces"))
        spans = [s for r in traces.resource_spans for scope in r.scope_spans for s in scope.spans]
        by_name = {}
        for span in spans:
            by_name.setdefault(span.name, []).append(span)
        assert sorted(by_name) == ["ganuda.jr.task", "jr_checkpoint.step", "jr_checkpoint.task"]
        (call,) = by_name["jr_checkpoint.task"]
        assert int.from_bytes(call.parent_span_id, "big") == task_span.span_id
        assert [int.from_bytes(s.parent_span_id, "big") for s in by_name["jr_checkpoint.step"]] \
            == [int.from_bytes(call.span_id, "big")] * 2
        outcomes = [next(a.value.string_value for a in s.attributes if a.key == OUTCOME)
                    for s in by_name["jr_checkpoint.step"]]
        assert outcomes == ["success", "failed"]

        exported = ExportMetricsServiceRequest.FromString(received(receiver, "/v1/metrics"))
        names = {m.name for r in exported.resource_metrics for scope in r.scope_metrics
                 for m in scope.metrics}
        assert {"jr_checkpoint.steps", "jr_checkpoint.record.duration"} <= names
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        unset()
