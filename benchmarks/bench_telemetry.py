#!/usr/bin/env python3
"""What the telemetry adds to one step, in microseconds (timeit; no database).

    python benchmarks/bench_telemetry.py [--number 20000] [--repeat 7]

Times what the wired core does per executed step (a step span entered and left with an
outcome, and one record latency) and per skipped step, in three setups, each in its own
interpreter so that the global providers start unset:

- absent:  opentelemetry is not importable (``sys.modules['opentelemetry'] = None``);
- api:     opentelemetry-api installed, no SDK configured (the API's proxies, no-op);
- sdk:     the SDK configured as ``lib/ganuda_otel.py`` configures it (a BatchSpanProcessor),
           its exporter an in-memory one, and an in-memory metric reader; inside a parent
           span, as under the worker's ``ganuda.jr.task``.

The best of --repeat runs of --number steps is shown (timeit's advice: the others are noise).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, timeit
setup, number, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if setup == "absent":
    sys.modules["opentelemetry"] = None
from jr_checkpoint import telemetry
parent = None
if setup == "sdk":
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=2048,
                                                   schedule_delay_millis=5000))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    parent = trace.get_tracer("bench").start_as_current_span("ganuda.jr.task")
    parent.__enter__()
assert telemetry.AVAILABLE == (setup != "absent")

def executed():
    with telemetry.step_span(7, 3, "file") as span:
        span.set_outcome("success")
    telemetry.record_latency(0.0004)

def skipped():
    telemetry.skipped_step(7, 3, "file")

def call():
    with telemetry.call_span(7) as span:
        span.set_outcome("finished")

def nothing():
    pass

out = {}
for name, fn in (("nothing", nothing), ("executed", executed), ("skipped", skipped), ("call", call)):
    fn()
    best = min(timeit.repeat(fn, number=number, repeat=repeat)) / number
    out[name] = best * 1e6
out["executed"] -= out["nothing"]; out["skipped"] -= out["nothing"]; out["call"] -= out["nothing"]
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"{'setup':8} {'executed step':>14} {'skipped step':>13} {'call':>8}   (us, best of {args.repeat})")
    for setup in ("absent", "api", "sdk"):
        result = subprocess.run([sys.executable, "-c", CHILD, setup, str(args.number), str(args.repeat)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            print(f"{setup:8} failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        figures = json.loads(result.stdout)
        print(f"{setup:8} {figures['executed']:14.2f} {figures['skipped']:13.2f} {figures['call']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
