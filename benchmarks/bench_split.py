"""Where the server's time goes with N writers: the ledger's statements, one kind at a time.

    python benchmarks/bench_checkpoint.py --workers 16 --split [--tasks 640] [--steps 10] [--repeat 3]

Each round runs the floor and then each kind below as N processes at once, as the workers mode
does (benchmarks/bench_workers.py: a shared start, CPU from the start, ratios within a round),
with statements only: no library code on the client, so what differs is the server's work.

- ``table``: the step row's upsert into a copy of jr_step_rewards (its columns and all its
  indexes), unfenced: what the row and its indexes cost;
- ``fenced``: the same upsert behind a lock on our checkpoint row (``FOR SHARE``), in a
  plpgsql function: a fence that writes no new row version;
- ``record``: ``jr_checkpoint_record_step_v2``, whose fence is the UPDATE that moves
  ``last_completed_step``, for every step;
- ``begin``: ``jr_checkpoint_begin_v2`` alone, one call a task;
- ``finish``: ``jr_checkpoint_finish_step_v2`` alone (a task's last step and the end of its
  attempt), one call a task.

The leases of ``fenced``, ``record`` and ``finish`` are taken before the start. Per-task kinds
are reported per call and spread over the task's steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable

from bench_workers import (
    LEDGER_COPY_UPSERT,
    WARM_BASE,
    _checkpoint,
    _measured,
    _postmaster,
    reference_tables,
)

from jr_checkpoint import schema
from jr_checkpoint.dsn import Target

TASK_BASE = 1_710_000_000
HOLDER = json.dumps({"host": "bench", "pid": 0, "proc": None})
BEGIN = "SELECT jr_checkpoint_begin_v2(%s, %s, %s, 30, %s::jsonb, NULL)"
RECORD = "SELECT jr_checkpoint_record_step_v2(%s, %s, %s, 'noop', %s, %s, 'success', 0, NULL, %s, %s, 30)"
FINISH = ("SELECT jr_checkpoint_finish_step_v2(%s, %s, %s, 'noop', %s, %s, 'success', 0, NULL, %s, %s, 30, "
          "'finished', NULL, %s, '{}', '{}')")
FENCED_FUNCTION = f"""CREATE FUNCTION pg_temp.bench_fenced(p_task integer, p_owner text, p_step integer,
    p_file text, p_hash varchar) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM jr_task_checkpoints
    WHERE task_id = p_task AND checkpoint_data ->> 'owner' = p_owner FOR SHARE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    {LEDGER_COPY_UPSERT.replace('%s, %s, ', 'p_task, p_step, ', 1).replace('%s, %s', 'p_file, p_hash', 1)};
    RETURN true;
END $$"""
HASH = "0" * 64


def _statement(kind: str, steps: int) -> Callable:
    """What one process sends for one task: ``send(cur, task, owner)``, the number of its
    statements the server refused to do (a fence that said no, a task not taken): a refused
    statement writes nothing and would look cheap."""
    def table(cur, task, owner):
        for number in range(steps):
            cur.execute(LEDGER_COPY_UPSERT, (task, number, f"file_{number}.txt", HASH))
        return 0

    def fenced(cur, task, owner):
        refused = 0
        for number in range(steps):
            cur.execute("SELECT pg_temp.bench_fenced(%s, %s, %s, %s, %s)",
                        (task, owner, number, f"file_{number}.txt", HASH))
            refused += cur.fetchone()[0] is not True
        return refused

    def record(cur, task, owner):
        refused = 0
        for number in range(steps):
            cur.execute(RECORD, (task, owner, number, f"file_{number}.txt", HASH, number, steps))
            refused += cur.fetchone()[0] is not True
        return refused

    def begin(cur, task, owner):
        cur.execute(BEGIN, (task, steps, owner, HOLDER))
        return int(not cur.fetchone()[0]["taken"])

    def finish(cur, task, owner):
        number = steps - 1
        cur.execute(FINISH, (task, owner, number, f"file_{number}.txt", HASH, number, steps,
                             list(range(steps))))
        return int(cur.fetchone()[0] is not True)

    return {"table": table, "fenced": fenced, "record": record, "begin": begin, "finish": finish}[kind]


#: kind -> (label, calls a task: "step" or "task", the lease taken before the start)
KINDS = {
    "table": ("the step row alone (unfenced)", "step", False),
    "fenced": ("the step row, fenced FOR SHARE", "step", True),
    "record": ("record_step_v2 (fence: UPDATE)", "step", True),
    "begin": ("begin_v2", "task", False),
    "finish": ("finish_step_v2 (the last step)", "task", True),
}


def _child(kind: str):
    def child(target: Target, tasks: list[int], steps: int, ready, go, results) -> None:
        from bench_checkpoint import FLOOR_UPSERT

        send = _statement(kind, steps) if kind != "floor" else None
        conn = target.connect()
        conn.autocommit = True
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(FENCED_FUNCTION)
            owners = {task: uuid.uuid4().hex for task in tasks}
            warm = WARM_BASE + os.getpid()
            if KINDS.get(kind, ("", "", False))[2]:
                for task in (warm, *tasks):
                    cur.execute(BEGIN, (task, steps, owners.get(task, "warm"), HOLDER))
            if send is None:
                cur.execute(FLOOR_UPSERT, (warm, 0))
            else:
                send(cur, warm, owners.get(warm, "warm"))  # plans cached before the start
            ready.put(1)
            go.wait(60)
            cpu, refused = time.process_time(), 0
            for task in tasks:
                if send is None:
                    for number in range(steps):
                        cur.execute(FLOOR_UPSERT, (task, number))
                else:
                    refused += send(cur, task, owners[task])
            cpu = time.process_time() - cpu
        results.put((kind, time.perf_counter(), {f"refused by {os.getpid()}": refused}, cpu))
    return child


def measure_split(target: Target, workers: int, tasks: int, steps: int, repeat: int) -> dict:
    schema.create_tables(target)
    admin = target.connect()
    admin.autocommit = True
    postmaster = _postmaster(admin)
    figures: dict = {kind: {"seconds": [], "server": [], "ratio": []} for kind in ("floor", *KINDS)}
    figures["refused"] = 0
    try:
        reference_tables(admin, make=True)
        for round_number in range(repeat + 1):  # round 0 warms up and is not counted
            floor = None
            for index, kind in enumerate(("floor", *KINDS)):
                base = TASK_BASE + (round_number * (1 + len(KINDS)) + index) * tasks
                _checkpoint(admin)
                seconds, said, (_, server) = _measured(_child(kind), target, list(range(base, base + tasks)),
                                                       steps, workers, postmaster)
                figures["refused"] += sum(said.values())
                floor = seconds if kind == "floor" else floor
                if round_number:
                    figures[kind]["seconds"].append(seconds)
                    figures[kind]["server"].append(server)
                    figures[kind]["ratio"].append(seconds / floor)
    finally:
        used = TASK_BASE + (repeat + 1) * (1 + len(KINDS)) * tasks  # the ids the rounds used
        with admin.cursor() as cur:
            for table in ("jr_step_rewards", "jr_task_checkpoints", "jr_task_attempts"):
                cur.execute(f"DELETE FROM {table} WHERE task_id BETWEEN %s AND %s "
                            "OR task_id BETWEEN %s AND %s",  # and each process's throwaway task
                            (TASK_BASE, used, WARM_BASE, WARM_BASE + 2**22))
        reference_tables(admin, make=False)
        admin.close()
    return figures


def report_split(figures: dict, workers: int, steps: int) -> list[str]:
    def server(kind: str) -> float | None:
        values = [v for v in figures[kind]["server"] if v is not None]
        return statistics.median(values) if values else None

    def shown(value: float | None, scale: float = 1.0) -> str:
        return "?" if value is None else f"{value * scale:,.0f}"

    lines = [f"{workers} processes at once, statements only, median over {len(figures['floor']['ratio'])} "
             "round(s):",
             "  kind                                  server µs a step   a call   time / floor a step"]
    floor = server("floor")
    lines.append(f"    {'floor: one autocommit upsert':34} {shown(floor):>12} {shown(floor):>8}   1.00x")
    for kind, (label, per, _) in KINDS.items():
        per_step = server(kind)
        calls = 1 if per == "step" else steps
        ratio = statistics.median(figures[kind]["ratio"])
        lines.append(f"    {label:34} {shown(per_step):>12} {shown(per_step, calls):>8}   {ratio:.2f}x")
    parts = [server(kind) for kind in ("begin", "record", "finish")]
    if floor is not None and None not in parts:
        begin, record, finish = parts
        task = begin + record * (steps - 1) / steps + finish  # per step, spread over the task
        lines.append(f"  a {steps}-step task (begin, {steps - 1} records, finish): {task:,.0f} µs of "
                     f"server CPU a step, {task / floor:.2f}x the floor's")
    lines.append(f"  statements refused (a fence that said no, a task not taken): {figures['refused']}")
    return lines


__all__ = ["KINDS", "measure_split", "report_split"]
