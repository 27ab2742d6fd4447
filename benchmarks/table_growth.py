#!/usr/bin/env python3
"""How fast the ledger grows: N tasks of S steps recorded into a fresh database, then the tables' sizes.

    python benchmarks/table_growth.py [--tasks 1000] [--steps 6] [--unfinished 0.1] [--dsn DSN]

Each task runs through @checkpointed_steps as on a worker: S file steps (a path of ~45
characters), each recorded as it succeeds; for the --unfinished fraction the last step fails,
which leaves the task's checkpoint row, as a failed task does. Sizes are
pg_total_relation_size (table, indexes, TOAST) read right after the run, and again after
VACUUM. The library writes jr_task_attempts itself (one row per attempt); with a library
that does not yet, one ended attempt per task is inserted directly and its size is marked
as an estimate.

A throwaway embedded server unless --dsn is given (its database must be empty: the script
creates the tables and drops them afterwards unless --keep).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from jr_checkpoint import CheckpointStore, checkpointed_steps, embedded, schema
from jr_checkpoint.db import connect
from jr_checkpoint.dsn import resolve

TABLES = ("jr_step_rewards", "jr_task_checkpoints", "jr_task_attempts")
FIRST_TASK = 900000


def sizes(target) -> dict[str, int]:
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT c, pg_total_relation_size(c) FROM unnest(%s::regclass[]) AS c",
                        (list(TABLES),))
            return {str(name): size for name, size in cur.fetchall()}
    finally:
        conn.close()


def vacuum(target) -> None:
    conn = connect(target, autocommit=True)
    try:
        with conn.cursor() as cur:
            for table in TABLES:
                cur.execute(f"VACUUM {table}")
    finally:
        conn.close()


class Executor:
    """The host's shape, minimal: execute() runs a step, execute_steps() runs them in order."""

    _current_task_id: int | None = None

    def execute(self, step):
        return {"success": not step.get("fail"), "path": step["args"]["path"]}

    def execute_steps(self, steps):
        results = []
        for step in steps:
            results.append(self.execute(step))
            if not results[-1]["success"]:
                break
        return results


def record_tasks(target, tasks: int, steps: int, unfinished: float) -> None:
    store = CheckpointStore(target)
    checked = type("Checked", (Executor,), {"execute_steps": checkpointed_steps(store=store)(
        Executor.execute_steps)})
    try:
        every = round(1 / unfinished) if unfinished > 0 else 0
        for n in range(tasks):
            executor = checked()
            executor._current_task_id = FIRST_TASK + n
            fail_last = bool(every and n % every == 0)
            executor.execute_steps([
                {"type": "file", "fail": fail_last and step == steps - 1,
                 "args": {"operation": "write", "content": f"# step {step} of task {n}\n",
                          "path": f"/ganuda/jr_executor/lib/module_{step:02d}_{n:06d}.py"}}
                for step in range(steps)])
    finally:
        store.close()


def attempt_rows(target) -> int:
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM jr_task_attempts")
            return cur.fetchone()[0]
    finally:
        conn.close()


def insert_attempts(target, tasks: int, steps: int) -> None:
    """One ended attempt per task, as the lead's code writes it (estimated: inserted directly)."""
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO jr_task_attempts (task_id, attempt, owner, host, pid, started_at, ended_at,"
                " outcome, resumed_at, ran, skipped, failed, lease_until)"
                " SELECT t, 1, md5(t::text) || md5((t + 1)::text), 'redfin', 4000 + t %% 1000,"
                " now() - interval '5 minutes', now(), 'finished', NULL,"
                " ARRAY(SELECT generate_series(0, %(last)s)), '{}'::int[], '{}'::int[],"
                " extract(epoch FROM now()) + 30"
                " FROM generate_series(%(first)s, %(first)s + %(tasks)s - 1) AS t",
                {"first": FIRST_TASK, "tasks": tasks, "last": steps - 1})
        conn.commit()
    finally:
        conn.close()


def report(label: str, measured: dict[str, int], tasks: int) -> None:
    print(label)
    for table in TABLES:
        size = measured[table]
        print(f"  {table:22} {size / 1024:9.0f} kB   {size / tasks * 1000 / 1024:8.0f} kB per 1,000 tasks")


def run(target, args) -> None:
    schema.create_tables(target)
    before = sizes(target)
    record_tasks(target, args.tasks, args.steps, args.unfinished)
    written = attempt_rows(target)
    if not written:
        insert_attempts(target, args.tasks, args.steps)
    after = sizes(target)
    growth = {t: after[t] - before[t] for t in TABLES}
    print(f"{args.tasks} tasks x {args.steps} steps, {args.unfinished:.0%} left unfinished; "
          + (f"{written} attempt rows written by the library" if written
             else "jr_task_attempts ESTIMATED (rows inserted directly)"))
    report("right after the run (less the empty tables' size):", growth, args.tasks)
    vacuum(target)
    vacuumed = sizes(target)
    report("after VACUUM (less the empty tables' size):", {t: vacuumed[t] - before[t] for t in TABLES},
           args.tasks)
    if not args.keep:
        schema.drop_tables(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--unfinished", type=float, default=0.1)
    parser.add_argument("--dsn")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("jr_checkpoint").addHandler(logging.NullHandler())  # not a line per task
    if args.dsn:
        run(resolve(args.dsn), args)
        return 0
    with tempfile.TemporaryDirectory() as scratch, \
            embedded.server(Path(scratch) / "pgdata", keep_data=False) as target:
        run(target, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
