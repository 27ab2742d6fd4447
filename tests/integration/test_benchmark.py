"""The benchmark still runs and writes every row. Its figures are never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2.extensions
import pytest

from tests.conftest import query

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_checkpoint.py"
STEPS = 50


@pytest.fixture
def dbos_database(dsn, pg_admin_dsn):
    """The database the benchmark gives DBOS (it keeps it with --keep); dropped afterwards."""
    ((name,),) = query(dsn, "SELECT current_database()")
    name = f"{name}_jr_bench_dbos"
    yield psycopg2.extensions.make_dsn(dsn, dbname=name)
    conn = psycopg2.connect(pg_admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def test_benchmark_runs_every_configuration_and_leaves_every_row(dsn, dbos_database):
    done = subprocess.run(
        [sys.executable, str(BENCH), "--steps", str(STEPS), "--repeat", "1", "--dsn", dsn, "--keep"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for label in ("undecorated executor", "decorated, fresh task", "decorated, full resume",
                  "the ledger's statement alone", "floor: one autocommit upsert per step",
                  "the same, of a row of the seed's table", "DBOS Transact"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert "(not run)" not in line
    assert "every executed step has its row" in out
    assert "targets:" in out

    # The ledger: the fresh task and the bare statements wrote STEPS rows each (plus warm-ups).
    counts = query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE execution_result = 'success' "
                        "GROUP BY task_id ORDER BY 1")
    assert sorted(n for (n,) in counts if n == STEPS) == [STEPS, STEPS]
    # The floor table: one upsert per step.
    assert (STEPS,) in query(dsn, "SELECT count(*) FROM jr_bench_floor GROUP BY task_id")
    assert (STEPS,) in query(dsn, "SELECT count(*) FROM jr_bench_seed_floor GROUP BY task_id")
    # DBOS: one operation row per step of the measured workflow.
    assert (STEPS,) in query(dbos_database, "SELECT count(*) FROM dbos.operation_outputs "
                                            "GROUP BY workflow_uuid")


def test_benchmark_cleans_up_after_itself_without_keep(dsn, dbos_database):
    done = subprocess.run(
        [sys.executable, str(BENCH), "--steps", "5", "--repeat", "1", "--dsn", dsn],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards") == [(0,)]
    assert query(dsn, "SELECT to_regclass('jr_bench_floor') IS NULL") == [(True,)]
    assert query(dsn, "SELECT to_regclass('jr_bench_seed_floor') IS NULL") == [(True,)]
    ((name,),) = query(dsn, "SELECT current_database()")
    assert query(dsn, "SELECT count(*) FROM pg_database WHERE datname = %s",
                 (f"{name}_jr_bench_dbos",)) == [(0,)]


def test_the_ratios_are_paired_within_each_round():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_checkpoint", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # The server's commit latency doubles for the second round: two rounds of three say 1.4x,
    # one (a slow moment inside the fresh run) 1.8x. The ratio of the medians would say 1.5x.
    times = {"floor": [0.5, 1.0, 0.6], "fresh": [0.9, 1.4, 0.84], "undecorated": [0.0, 0.0, 0.0]}
    assert bench.paired(times, "fresh", "floor", minus="undecorated") == pytest.approx(1.4)
    times["undecorated"] = [0.1, 0.2, 0.12]
    assert bench.paired(times, "fresh", "floor", minus="undecorated") == pytest.approx(1.2)


def test_the_split_runs_every_statement_kind_has_none_refused_and_leaves_nothing(dsn):
    done = subprocess.run(
        [sys.executable, str(BENCH), "--workers", "4", "--split", "--tasks", "8", "--steps", "3",
         "--repeat", "1", "--dsn", dsn],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    for label in ("floor: one autocommit upsert", "the step row alone", "fenced FOR SHARE",
                  "record_step_v2", "begin_v2", "finish_step_v2", "a 3-step task"):
        assert label in done.stdout, label
    assert "statements refused (a fence that said no, a task not taken): 0" in done.stdout
    for table in ("jr_step_rewards", "jr_task_checkpoints", "jr_task_attempts"):
        assert query(dsn, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert query(dsn, "SELECT to_regclass('jr_bench_ledger_copy'), to_regclass('jr_bench_floor')") == [
        (None, None)]


def test_split_without_workers_is_refused_in_one_line():
    done = subprocess.run([sys.executable, str(BENCH), "--split"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--split goes with --workers N")
