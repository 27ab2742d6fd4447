"""A worker for the fault tests: takes tasks through @checkpointed_steps until each is finished.

    python fault_worker.py --dsn DSN --name NAME --dir DIR [--tasks 1,2] [--lease 4] [--outage 2]
                           [--step-ms 20] [--gate TASK:STEP ...] [--once] [--linger]

DIR holds tasks.json ({task id: number of steps}) and the journal, journal.jsonl: one JSON line
per event, appended with O_APPEND and written before the worker goes on, so a line is on disk
when the event happened. A step writes ``start`` before it does anything and ``end`` when it is
done; a gated step writes ``gate`` after ``start`` and then waits for the file go-NAME-TASK-STEP
(the test's handshake). Around each call: ``call``, then ``done``, ``locked``, ``lost`` or
``error``; ``unreachable`` when the worker cannot reach the server to look for work (it then
calls nothing, as the host's queue, in the same database, would give it no task). A task lost
(TaskOwnershipLost) is given up. ``--linger`` keeps the worker alive after its work, writing
``seen`` each time it reaches the server, until the test creates go-NAME-exit.
The release under test is whatever ``jr_checkpoint`` PYTHONPATH finds, so an old
release's package runs this same worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

import psycopg2

from jr_checkpoint import CheckpointStore, TaskLockedError, checkpointed_steps
from jr_checkpoint.errors import CheckpointError, TaskOwnershipLost

GATE_SECONDS = 120  # a gate the test never opens fails the step instead of hanging


class Journal:
    def __init__(self, path: Path, worker: str):
        self.path, self.worker = path, worker

    def __call__(self, what: str, task: int = -1, step: int = -1, detail: str = "") -> None:
        line = json.dumps({"what": what, "worker": self.worker, "task": task, "step": step,
                           "at": time.time(), "detail": detail[:300]}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def finished(dsn: str, task: int, steps: int) -> bool | None:
    """Every step a success and no checkpoint row; None when the server cannot say (our own
    connection, with dead-peer detection so that a partition fails it in seconds)."""
    try:
        with contextlib.closing(psycopg2.connect(
                dsn, connect_timeout=2, keepalives=1, keepalives_idle=1, keepalives_interval=1,
                keepalives_count=2, tcp_user_timeout=2000,
                options="-c statement_timeout=2000")) as conn, conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM jr_step_rewards WHERE task_id = %s "
                        "AND execution_result = 'success'), (SELECT count(*) FROM "
                        "jr_task_checkpoints WHERE task_id = %s)", (task, task))
            successes, checkpoints = cur.fetchone()
            return successes == steps and checkpoints == 0
    except psycopg2.Error:
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--tasks", default="")
    parser.add_argument("--lease", type=float, default=4.0)
    parser.add_argument("--outage", type=float, default=2.0)
    parser.add_argument("--step-ms", type=int, default=20)
    parser.add_argument("--gate", action="append", default=[])
    parser.add_argument("--once", action="store_true", help="one call per task, then exit")
    parser.add_argument("--linger", action="store_true",
                        help="when done, stay (polling the server) until DIR/go-NAME-exit exists")
    args = parser.parse_args()

    all_tasks = {int(k): v for k, v in json.loads((args.dir / "tasks.json").read_text()).items()}
    mine = [int(t) for t in args.tasks.split(",") if t] or sorted(all_tasks)
    gates = {tuple(int(x) for x in gate.split(":")) for gate in args.gate}
    note = Journal(args.dir / "journal.jsonl", args.name)
    store = CheckpointStore(args.dsn, lease=args.lease, outage=args.outage)

    class Executor:
        """The host's loop: run each step, stop at the first failure."""

        def __init__(self, task_id: int):
            self._current_task_id = task_id

        def execute(self, step: dict) -> dict:
            task, number = step["task"], step["n"]
            note("start", task, number)
            if (task, number) in gates:
                note("gate", task, number)
                go = args.dir / f"go-{args.name}-{task}-{number}"
                deadline = time.monotonic() + GATE_SECONDS
                while not go.exists():
                    if time.monotonic() > deadline:
                        return {"success": False, "error": "the test never opened the gate"}
                    time.sleep(0.01)
            else:
                time.sleep(args.step_ms / 1000)
            note("end", task, number)
            return {"success": True}

        @checkpointed_steps(store=store, wait=0)
        def execute_steps(self, steps: list[dict]) -> list[dict]:
            results = []
            for step in steps:
                results.append(self.execute(step))
                if not results[-1]["success"]:
                    break
            return results

    rng = random.Random(args.name)
    pending = list(mine)
    while pending:
        rng.shuffle(pending)
        for task in list(pending):
            state = finished(args.dsn, task, all_tasks[task])
            if state:
                pending.remove(task)
                continue
            if state is None:  # no server, no task: the host's queue lives in the same database
                note("unreachable", task)
                continue
            note("call", task)
            try:
                steps = [{"task": task, "n": n, "type": "noop", "path": f"t{task}/s{n}"}
                         for n in range(all_tasks[task])]
                results = Executor(task).execute_steps(steps)
                note("done", task, detail=f"{sum(bool(r.get('success')) for r in results)} ok")
            except TaskOwnershipLost as exc:
                note("lost", task, detail=str(exc))
                pending.remove(task)  # another worker has it now; the host gives it up
                continue
            except TaskLockedError as exc:
                note("locked", task, detail=str(exc))
            except CheckpointError as exc:
                note("error", task, detail=f"{type(exc).__name__}: {exc}")
            if args.once:
                pending.remove(task)
        time.sleep(0.05)  # a retry cadence, not a synchronisation
    while args.linger and not (args.dir / f"go-{args.name}-exit").exists():
        seen = finished(args.dsn, mine[0], all_tasks[mine[0]])  # the server again, and our store
        if seen is not None:
            note("seen", mine[0], detail=str(seen))
        time.sleep(0.05)
    note("exit")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
