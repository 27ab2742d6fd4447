"""The dashboard's benchmark still runs on a small ledger. Its figures are never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import query

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_web.py"


def test_the_web_benchmark_fills_its_ledger_and_times_every_endpoint(dsn):
    done = subprocess.run([sys.executable, str(BENCH), "--tasks", "200", "--steps", "3",
                           "--repeat", "1", "--dsn", dsn], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert query(dsn, "SELECT count(*), count(DISTINCT task_id) FROM jr_step_rewards") == [(600, 200)]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ledger: 600 step rows over 200 tasks, ")
    attempts = query(dsn, "SELECT count(*), count(DISTINCT task_id) FROM jr_task_attempts")
    assert attempts[0][1] == 200 and 400 <= attempts[0][0] <= 800  # three a task on average
    assert f"{attempts[0][0]:,} attempt rows" in lines[0]
    timed = [line for line in lines if line.endswith((" met", " NOT met"))]
    assert len(timed) == 24
    for label in ("tasks, first page", "task 200 (JSON)", "analytics, since=all (JSON)"):
        assert any(line.startswith(label + " ") for line in timed), label
    again = subprocess.run([sys.executable, str(BENCH), "--tasks", "10", "--dsn", dsn],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "already has a ledger" in again.stderr
