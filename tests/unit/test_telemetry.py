"""jr_checkpoint.telemetry on the real OpenTelemetry SDK, read through its in-memory exporters."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from jr_checkpoint import telemetry
from jr_checkpoint.errors import TaskExhaustedError, TaskLockedError, TaskOwnershipLost
from tests.otel_sdk import sdk, unset

ROOT = Path(__file__).resolve().parents[2]
OUTCOME = "jr_checkpoint.outcome"


@pytest.fixture
def otel():
    with sdk() as installed:
        yield installed


def steps_by_outcome(otel) -> dict[str, int]:
    return {dict(key)[OUTCOME]: value for key, value in otel.points("jr_checkpoint.steps").items()}


def test_call_and_step_spans_are_children_of_the_current_span(otel):
    parent_tracer = trace.get_tracer("worker")
    with parent_tracer.start_as_current_span("ganuda.jr.task") as parent:
        with telemetry.call_span(41) as call:
            with telemetry.step_span(41, 0, "file") as step:
                step.set_outcome("success")
            telemetry.skipped_step(41, 1, "bash")
            call.set_outcome("finished")
    (task_span,) = otel.finished("ganuda.jr.task")
    (call_span,) = otel.finished("jr_checkpoint.task")
    executed, skipped = otel.finished("jr_checkpoint.step")
    assert task_span.context.span_id == parent.get_span_context().span_id
    assert call_span.parent.span_id == task_span.context.span_id
    assert executed.parent.span_id == skipped.parent.span_id == call_span.context.span_id
    assert dict(call_span.attributes) == {"jr_checkpoint.task_id": 41, OUTCOME: "finished"}
    assert dict(executed.attributes) == {"jr_checkpoint.task_id": 41, "jr_checkpoint.step_number": 0,
                                         "jr_checkpoint.step_type": "file", OUTCOME: "success"}
    assert dict(skipped.attributes) == {"jr_checkpoint.task_id": 41, "jr_checkpoint.step_number": 1,
                                        "jr_checkpoint.step_type": "bash", OUTCOME: "skipped"}
    assert skipped.start_time == skipped.end_time
    assert executed.status.status_code == StatusCode.UNSET
    assert steps_by_outcome(otel) == {"success": 1, "skipped": 1}


def test_a_step_that_raised_is_failed_with_its_exception(otel):
    with pytest.raises(ValueError, match="boom"), telemetry.step_span(5, 2, None) as step:
        step.set_outcome("error")  # the ledger's word for a step that raised
        raise ValueError("boom")
    (span,) = otel.finished()
    assert span.attributes[OUTCOME] == "failed"
    assert "jr_checkpoint.step_type" not in span.attributes
    assert span.attributes["error.type"] == "ValueError"
    assert span.status.status_code == StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.parametrize(("outcome", "raised", "reported"), [
    ("failed", None, "failed"),
    ("unchecked", None, "unchecked"),
    (None, None, "unchecked"),  # left without an outcome: nothing says it was recorded
    (None, RuntimeError, "failed"),
])
def test_step_outcomes(otel, outcome, raised, reported):
    try:
        with telemetry.step_span(5, 0, "bash") as step:
            if outcome is not None:
                step.set_outcome(outcome)
            if raised is not None:
                raise raised("x")
    except RuntimeError:
        pass
    (span,) = otel.finished()
    assert span.attributes[OUTCOME] == reported
    assert steps_by_outcome(otel) == {reported: 1}
    assert (span.status.status_code == StatusCode.ERROR) == (reported == "failed")


@pytest.mark.parametrize(("raised", "reported"), [
    (TaskOwnershipLost, "lost"), (TaskLockedError, "locked"), (TaskExhaustedError, "exhausted"),
    (KeyError, "failed"),
])
def test_a_call_without_an_outcome_says_how_it_ended(otel, raised, reported):
    with pytest.raises(raised), telemetry.call_span(9):
        raise raised()
    (span,) = otel.finished()
    assert span.attributes[OUTCOME] == reported
    assert span.status.status_code == StatusCode.ERROR


def test_counters_and_the_latency_histogram(otel):
    with trace.get_tracer("worker").start_as_current_span("ganuda.jr.task"), telemetry.call_span(3):
        telemetry.count_lease_loss(3)
        telemetry.count_outage(3)
        telemetry.count_unchecked(3)
        telemetry.count_unchecked(None, reason="bad_task_id")
        telemetry.record_latency(0.0004)
        telemetry.record_latency(0.003)
    assert otel.points("jr_checkpoint.lease_losses") == {frozenset(): 1}
    assert otel.points("jr_checkpoint.outages") == {frozenset(): 1}
    unchecked = otel.points("jr_checkpoint.unchecked_calls")
    assert {dict(k)["jr_checkpoint.reason"]: v for k, v in unchecked.items()} == {
        "ledger_failed": 1, "bad_task_id": 1}
    (latency,) = otel.points("jr_checkpoint.record.duration").values()
    assert latency.count == 2 and latency.sum == pytest.approx(3.4)
    assert tuple(latency.explicit_bounds) == telemetry.LATENCY_BUCKETS_MS
    assert latency.bucket_counts[1] == 1 and latency.bucket_counts[4] == 1  # (0.25, 0.5], (2, 5]
    (call,) = otel.finished("jr_checkpoint.task")
    assert [(e.name, dict(e.attributes)) for e in call.events] == [
        ("jr_checkpoint.lease_lost", {"jr_checkpoint.task_id": 3}),
        ("jr_checkpoint.outage", {"jr_checkpoint.task_id": 3}),
        ("jr_checkpoint.unchecked", {"jr_checkpoint.task_id": 3}),
    ]


def test_an_sdk_configured_after_the_first_step_is_used():
    """The API's proxies: instruments made before the host sets its providers follow them."""
    unset()
    try:
        with telemetry.step_span(1, 0, "file") as step:  # no SDK yet: nothing to record
            step.set_outcome("success")
        telemetry.record_latency(0.001)
        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        with telemetry.step_span(1, 1, "file") as step:  # no telemetry.reset() in between
            step.set_outcome("success")
        telemetry.record_latency(0.001)
        assert [s.attributes["jr_checkpoint.step_number"] for s in spans.get_finished_spans()] == [1]
        names = {m.name: m for r in reader.get_metrics_data().resource_metrics
                 for s in r.scope_metrics for m in s.metrics}
        assert names["jr_checkpoint.steps"].data.data_points[0].value == 1
        assert names["jr_checkpoint.record.duration"].data.data_points[0].count == 1
    finally:
        unset()


class BrokenTracer:
    def start_span(self, *args, **kwargs):
        raise RuntimeError("exporter misconfigured")


class BrokenProvider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return BrokenTracer()


def test_a_failing_sdk_costs_the_span_never_the_step(caplog):
    unset()
    trace.set_tracer_provider(BrokenProvider())
    try:
        ran = []
        with caplog.at_level(logging.WARNING, logger="jr_checkpoint.telemetry"):
            for number in range(2):
                with telemetry.step_span(1, number, "file") as step:
                    ran.append(number)
                    step.set_outcome("success")
        assert ran == [0, 1]
        assert [r.message for r in caplog.records] == [
            "jr_checkpoint telemetry failed, spans or metrics may be missing: exporter misconfigured"]
        assert caplog.records[0].action == "telemetry_failed"
    finally:
        unset()


WITHOUT_OPENTELEMETRY = r"""
import json, sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
import jr_checkpoint
from jr_checkpoint import checkpointed_steps, telemetry
from tests.fakes import Executor, FakeStore

store = FakeStore()
decorated = checkpointed_steps(store=store)(Executor.execute_steps)
Checked = type("Checked", (Executor,), {"execute_steps": decorated})
first = Checked(task_id=8).execute_steps([{"n": 0}, {"n": 1, "fail": True}])
again = Checked(task_id=8)
second = again.execute_steps([{"n": 0}, {"n": 1}])
with telemetry.call_span(8) as call, telemetry.step_span(8, 0, "file") as step:
    call.set_outcome("finished"); step.set_outcome("success")
telemetry.skipped_step(8, 0, "file"); telemetry.count_lease_loss(8); telemetry.count_outage(8)
telemetry.count_unchecked(8); telemetry.record_latency(0.1)
print(json.dumps({"available": telemetry.AVAILABLE, "first": first, "second": second,
                  "ran_again": again.ran, "results": store.results(8),
                  "loaded": sorted(m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v),
                  }))
"""


def test_without_opentelemetry_everything_works_and_telemetry_does_nothing():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", WITHOUT_OPENTELEMETRY], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["available"] is False
    assert out["loaded"] == []
    assert out["first"] == [{"success": True}, {"success": False}]
    assert out["second"][0]["skipped"] is True and out["second"][1] == {"success": True}
    assert out["ran_again"] == [{"n": 1}]
    assert out["results"] == {"0": "success", "1": "success"}
