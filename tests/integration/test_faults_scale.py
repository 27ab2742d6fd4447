"""Scale: the benchmark's workers mode at a small size, sixteen processes at once through the real
decorator. Checked: every step ran once and left its one row, no checkpoint row is left. The
throughput ratio is the benchmark's to report, never asserted here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import query

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_checkpoint.py"
WORKERS, TASKS, STEPS = 16, 32, 5


def test_sixteen_workers_run_every_step_once_and_lose_no_record(dsn):
    done = subprocess.run(
        [sys.executable, str(BENCH), "--workers", str(WORKERS), "--tasks", str(TASKS),
         "--steps", str(STEPS), "--repeat", "1", "--dsn", dsn, "--keep"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    line = next(line for line in done.stdout.splitlines() if "steps run twice" in line)
    assert re.search(r"steps run twice: 0; steps without their row: 0; checkpoint rows left: 0", line), line
    # The ledger itself: two rounds (warm-up and one) of TASKS tasks through the decorator and
    # TASKS through the store alone, each step one success row; the throwaway task each process
    # runs before the start is gone.
    rows = query(dsn, "SELECT task_id, count(*), bool_and(execution_result = 'success') "
                      "FROM jr_step_rewards GROUP BY task_id")
    assert len(rows) == 4 * TASKS and all(n == STEPS and ok for _, n, ok in rows), rows
    assert query(dsn, "SELECT count(*) FROM jr_task_checkpoints") == [(0,)]
    assert query(dsn, "SELECT count(*) FROM jr_bench_floor") == [(2 * TASKS * STEPS,)]
    assert query(dsn, "SELECT count(*) FROM jr_bench_ledger_copy") == [(2 * TASKS * STEPS,)]
