"""OpenTelemetry: a span per checkpointed call and per step, and a few counters.

Optional (the ``otel`` extra, ``opentelemetry-api``): without the API every function here
does nothing. With it, spans and metrics go to whatever providers the host configured, for
the Jr worker the ones ``lib/ganuda_otel.py`` sets up; a call's span is a child of the
current span (the worker's ``ganuda.jr.task``), and a step's span a child of the call's.

The tracer and the instruments are made once per provider and made again when the global
provider changes (a host that configures its SDK after the first task, a test that swaps
providers); before any is configured the API's proxies do nothing, at the cost of a few
attribute reads. Metric attributes never carry a task id: a task id per time series would
grow without bound. Spans carry it. Nothing here raises into the host: a failing SDK costs
the span, never the step.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

try:  # once, at import: the rest of the module tests `trace is None`
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:
    otel_context = metrics = trace = None  # type: ignore[assignment]

from .errors import TaskExhaustedError, TaskLockedError, TaskOwnershipLost

logger = logging.getLogger(__name__)

SCOPE = "jr_checkpoint"
CALL_SPAN = "jr_checkpoint.task"
STEP_SPAN = "jr_checkpoint.step"

TASK_ID = "jr_checkpoint.task_id"
STEP_NUMBER = "jr_checkpoint.step_number"
STEP_TYPE = "jr_checkpoint.step_type"
OUTCOME = "jr_checkpoint.outcome"
REASON = "jr_checkpoint.reason"

#: A step's outcomes; the ledger's ``error`` (the step raised) is reported as ``failed``.
STEP_OUTCOMES = ("success", "failed", "skipped", "unchecked")
_STEP_OUTCOME = {"success": "success", "failed": "failed", "error": "failed",
                 "skipped": "skipped", "unchecked": "unchecked"}

#: The record's latency in ms: a per-step write takes ~0.3-0.6 ms, a patient one rides out a
#: restart (seconds); the SDK's default buckets start at 5 ms and would hold every write in one.
LATENCY_BUCKETS_MS = (0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

#: True when opentelemetry-api is importable; without it every function here does nothing.
AVAILABLE = trace is not None


class _Instruments:
    __slots__ = ("tracer", "steps", "lease_losses", "outages", "unchecked_calls", "record_duration")

    def __init__(self) -> None:
        # Before the host configures an SDK these are the API's proxies: the tracer asks for
        # the real provider at each span until one is set, and the proxy meter's instruments
        # get real ones when it is (opentelemetry-api's ProxyTracer and _ProxyMeter).
        self.tracer = trace.get_tracer(SCOPE)
        meter = metrics.get_meter(SCOPE)
        self.steps = meter.create_counter(
            "jr_checkpoint.steps", unit="{step}",
            description="Steps of checkpointed calls, by outcome (success, failed, skipped, unchecked)")
        self.lease_losses = meter.create_counter(
            "jr_checkpoint.lease_losses", unit="{task}",
            description="Calls stopped because another worker took their task over")
        self.outages = meter.create_counter(
            "jr_checkpoint.outages", unit="{outage}",
            description="Times a call found the checkpoint database unreachable")
        self.unchecked_calls = meter.create_counter(
            "jr_checkpoint.unchecked_calls", unit="{call}",
            description="Times a checkpointed call went on without checkpoints, by reason")
        name, description = "jr_checkpoint.record.duration", "Latency of one step's record in the ledger"
        try:
            self.record_duration = meter.create_histogram(
                name, unit="ms", description=description,
                explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS)
        except TypeError:  # an API older than 1.30 (a host's venv): the SDK's default buckets
            self.record_duration = meter.create_histogram(name, unit="ms", description=description)


_current: _Instruments | None = None
_lock = threading.Lock()
_failed = False


def _instruments() -> _Instruments | None:
    """The tracer and instruments, made at the first call (None without the API)."""
    global _current
    current = _current
    if current is None and trace is not None:
        with _lock:
            if _current is None:
                try:
                    _current = _Instruments()
                except Exception as exc:  # a broken SDK: no telemetry rather than a failed step
                    _swallow(exc)
                    return None
            current = _current
    return current


def reset() -> None:
    """Forget the tracer and instruments: the next span makes them on the providers then set.

    Only for what the API itself never does, replacing a global provider once set (tests do,
    through opentelemetry-test-utils); a provider set for the first time needs no reset.
    """
    global _current, _failed
    with _lock:
        _current, _failed = None, False


def _swallow(exc: BaseException) -> None:
    """A telemetry failure is logged once and otherwise ignored."""
    global _failed
    if not _failed:
        _failed = True
        logger.warning("jr_checkpoint telemetry failed, spans or metrics may be missing: %s", exc,
                       extra={"action": "telemetry_failed"})


def _call_outcome(exc: BaseException | None) -> str:
    """What a call's span says when the caller set no outcome: from how the call ended."""
    if exc is None:
        return "finished"
    if isinstance(exc, TaskOwnershipLost):  # before TaskLockedError, its parent
        return "lost"
    if isinstance(exc, TaskLockedError):
        return "locked"
    if isinstance(exc, TaskExhaustedError):
        return "exhausted"
    return "failed"


class Span:
    """A context manager around a span made current while it runs; ``set_outcome`` before exit."""

    __slots__ = ("_name", "_attributes", "_step", "_outcome", "_span", "_token", "_instruments")

    def __init__(self, name: str, attributes: dict[str, Any], step: bool):
        self._name = name
        self._attributes = attributes
        self._step = step
        self._outcome: str | None = None
        self._span: Any = None
        self._token: Any = None
        self._instruments: _Instruments | None = None

    def set_outcome(self, outcome: str | None) -> None:
        self._outcome = outcome

    def __enter__(self) -> Span:
        try:
            instruments = self._instruments = _instruments()
            if instruments is None:
                return self
            kind = self._attributes.get(STEP_TYPE)
            if kind is not None and not isinstance(kind, str):  # the host's: anything at all
                self._attributes[STEP_TYPE] = str(kind)
            span = instruments.tracer.start_span(self._name, attributes=self._attributes)
            if span.get_span_context().is_valid:  # the API's no-op tracer gives an invalid one
                self._span = span
                self._token = otel_context.attach(trace.set_span_in_context(span))
        except Exception as exc:
            _swallow(exc)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        instruments = self._instruments
        if instruments is None:
            return False
        try:
            if self._step:
                outcome = _STEP_OUTCOME.get(self._outcome or "", "failed" if exc else "unchecked")
                instruments.steps.add(1, {OUTCOME: outcome})
            else:
                outcome = self._outcome or _call_outcome(exc)
            span, self._span = self._span, None
            if span is not None:
                span.set_attribute(OUTCOME, outcome)
                if exc is not None:
                    span.record_exception(exc)
                    span.set_attribute("error.type", type(exc).__qualname__)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}"))
                elif self._outcome == "error" or outcome == "failed":
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
        except Exception as err:
            _swallow(err)
        finally:
            if self._token is not None:
                token, self._token = self._token, None
                try:
                    otel_context.detach(token)
                except Exception as err:
                    _swallow(err)
        return False


class _NoSpan:
    """What the span functions return without the API: enter, set_outcome and exit do nothing."""

    __slots__ = ()

    def set_outcome(self, outcome: str | None) -> None:
        pass

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        return False


_NO_SPAN = _NoSpan()


def call_span(task_id: int) -> Span | _NoSpan:
    """A span ``jr_checkpoint.task`` around one checkpointed call.

    Its outcome, set with ``set_outcome``: ``finished``, ``failed``, ``unchecked``, ...; unset,
    it follows how the call ended (``finished``, or ``lost``, ``locked``, ``exhausted`` or
    ``failed`` from the exception).
    """
    if trace is None:
        return _NO_SPAN
    return Span(CALL_SPAN, {TASK_ID: task_id}, step=False)


def step_span(task_id: int, step_number: int, step_type: str | None) -> Span | _NoSpan:
    """A span ``jr_checkpoint.step`` around one executed step, counted in ``jr_checkpoint.steps``.

    ``set_outcome``: ``success``, ``failed``, ``error`` (the step raised: reported as ``failed``,
    with the span's status ERROR) or ``unchecked`` (it ran but was not recorded). Unset, it is
    ``failed`` when an exception leaves the block, else ``unchecked``.
    """
    if trace is None:
        return _NO_SPAN
    attributes: dict[str, Any] = {TASK_ID: task_id, STEP_NUMBER: step_number}
    if step_type is not None:
        attributes[STEP_TYPE] = step_type
    return Span(STEP_SPAN, attributes, step=True)


def skipped_step(task_id: int, step_number: int, step_type: str | None) -> None:
    """A step skipped because it already succeeded: a span of no duration, and its count."""
    instruments = _instruments()
    if instruments is None:
        return
    try:
        instruments.steps.add(1, {OUTCOME: "skipped"})
        now = time.time_ns()
        attributes: dict[str, Any] = {TASK_ID: task_id, STEP_NUMBER: step_number, OUTCOME: "skipped"}
        if step_type is not None:
            attributes[STEP_TYPE] = str(step_type)
        span = instruments.tracer.start_span(STEP_SPAN, attributes=attributes, start_time=now)
        span.end(end_time=now)
    except Exception as exc:
        _swallow(exc)


def _event(name: str, task_id: int) -> None:
    """Mark ``name`` on the current span (the call's): the task id lives on spans, not metrics."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, {TASK_ID: task_id})


def _count(counter: str, event: str, task_id: int | None, attributes: dict[str, str] | None = None) -> None:
    """Add one to the instrument named ``counter``, and an ``event`` on the call's span."""
    instruments = _instruments()
    if instruments is None:
        return
    try:
        getattr(instruments, counter).add(1, attributes)
        if task_id is not None:
            _event(event, task_id)
    except Exception as exc:
        _swallow(exc)


def count_lease_loss(task_id: int) -> None:
    """Another worker took ``task_id`` over: this call stops."""
    _count("lease_losses", "jr_checkpoint.lease_lost", task_id)


def count_outage(task_id: int) -> None:
    """The ledger could not be reached during ``task_id``'s call."""
    _count("outages", "jr_checkpoint.outage", task_id)


def count_unchecked(task_id: int | None, reason: str = "ledger_failed") -> None:
    """A call goes on without checkpoints; ``reason`` is one of a few fixed words."""
    _count("unchecked_calls", "jr_checkpoint.unchecked", task_id, {REASON: reason})


def record_latency(seconds: float) -> None:
    """One step's record took ``seconds`` (reported in ms)."""
    instruments = _instruments()
    if instruments is None:
        return
    try:
        instruments.record_duration.record(seconds * 1000.0)
    except Exception as exc:
        _swallow(exc)


__all__ = ["AVAILABLE", "STEP_OUTCOMES", "call_span", "count_lease_loss", "count_outage",
           "count_unchecked", "record_latency", "reset", "skipped_step", "step_span"]
