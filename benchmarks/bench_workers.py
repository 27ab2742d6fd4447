"""The benchmark's workers mode: N processes at once, the decorator against the one-upsert floor.

    python benchmarks/bench_checkpoint.py --workers 16 [--tasks 160] [--steps 10] [--repeat 5]

Each round runs the floor (N processes, each upserting its share of the tasks' steps into the
floor table, one autocommit statement a step) and then the library (N processes, each running
its share of the tasks through the real @checkpointed_steps, one CheckpointStore a process),
then the floor again, and so on: ratios are taken within a pair, as in the one-process mode.
Two references run in the same rounds, to show what the library's ratio is made of: the
ledger's table alone (one upsert of a step row into a copy of jr_step_rewards with all its
indexes: no fence, no lease, no library code) and the ledger's statements alone (a task's
begin and its step records through CheckpointStore, without the decorator).

Every process connects, builds its executor and runs one throwaway task before a shared
start (a long-lived worker's server process has its plans cached; a fresh one plans each
function at its first call); a run's time is from that start to the last process's end.
Afterwards every step must have run exactly once (counted by the executors) and left exactly
one success row, with no checkpoint row left.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable

from bench_checkpoint import FLOOR_DDL, FLOOR_TABLE, SEED_FLOOR_TABLE, SEED_FLOOR_UPSERT

from jr_checkpoint import CheckpointStore, checkpointed_steps, schema
from jr_checkpoint.dsn import Target

START_TIMEOUT = 60  # seconds for every process to connect and wait at the start
TASK_BASE = 1_700_000_000  # task ids far from the host's and the demo's
WARM_BASE = 1_690_000_000  # a throwaway task per process, run before the start
LEDGER_COPY = "jr_bench_ledger_copy"  # jr_step_rewards's columns and indexes, for the reference
LEDGER_COPY_UPSERT = SEED_FLOOR_UPSERT.replace(SEED_FLOOR_TABLE, LEDGER_COPY)


def _floor_child(target: Target, tasks: list[int], steps: int, ready, go, results) -> None:
    from bench_checkpoint import FLOOR_UPSERT

    cpu = _upserts(target, tasks, steps, ready, go, FLOOR_UPSERT, FLOOR_TABLE,
                   lambda task, number: (task, number))
    results.put(("floor", time.perf_counter(), {}, cpu))


def _ledger_copy_child(target: Target, tasks: list[int], steps: int, ready, go, results) -> None:
    cpu = _upserts(target, tasks, steps, ready, go, LEDGER_COPY_UPSERT, LEDGER_COPY,
                   lambda task, number: (task, number, f"file_{number}.txt", "0" * 64))
    results.put(("ledger copy", time.perf_counter(), {}, cpu))


def _upserts(target: Target, tasks: list[int], steps: int, ready, go, statement: str, table: str,
             values: Callable) -> float:
    """The upserts, after one before the start; the CPU seconds they cost this process."""
    conn = target.connect()
    conn.autocommit = True
    with contextlib.closing(conn), conn.cursor() as cur:
        warm = WARM_BASE + os.getpid()
        cur.execute(statement, values(warm, 0))
        cur.execute(f"DELETE FROM {table} WHERE task_id = %s", (warm,))
        ready.put(1)
        go.wait(START_TIMEOUT)
        cpu = time.process_time()
        for task in tasks:
            for number in range(steps):
                cur.execute(statement, values(task, number))
        return time.process_time() - cpu


def _statements_child(target: Target, tasks: list[int], steps: int, ready, go, results) -> None:
    """A task's begin and one record a step through the store, as the decorator sends them
    (the last record ends the attempt), without the decorator."""
    from jr_checkpoint.ledger import AttemptEnd

    store = CheckpointStore(target)
    end = AttemptEnd("finished", None, tuple(range(steps)))

    def run(task: int) -> None:
        state = store.begin_task(task, steps)
        owner = state.owner
        store.hold(task, owner, state.lease_until)
        for number in range(steps):
            store.record_step(task, number, owner=owner, execution_result="success", step_type="noop",
                              target_file=f"file_{number}.txt", content_hash="0" * 64,
                              execution_time_ms=0, last_completed_step=number, total_steps=steps,
                              end=end if number == steps - 1 else None)

    warm = WARM_BASE + os.getpid()
    run(warm)
    store.forget_task(warm)
    ready.put(1)
    go.wait(START_TIMEOUT)
    cpu = time.process_time()
    executed = {}
    for task in tasks:
        run(task)
        executed[task] = steps
    cpu = time.process_time() - cpu
    store.close()
    results.put(("statements", time.perf_counter(), executed, cpu))


def _ours_child(target: Target, tasks: list[int], steps: int, ready, go, results) -> None:
    from bench_checkpoint import executor_class, make_steps

    store = CheckpointStore(target)
    base = executor_class()
    executed: dict[int, int] = {}

    class Counted(base):
        def execute(self, step):
            executed[self._current_task_id] = executed.get(self._current_task_id, 0) + 1
            return {"success": True}

        execute_steps = checkpointed_steps(store=store)(base.execute_steps)

    plan = make_steps(steps)
    warm = WARM_BASE + os.getpid()  # connect and plan before the start, as the floor does
    executor = Counted()
    executor._current_task_id = warm
    executor.execute_steps(plan)
    executed.clear()
    store.forget_task(warm)
    ready.put(1)
    go.wait(START_TIMEOUT)
    cpu = time.process_time()
    for task in tasks:
        executor = Counted()
        executor._current_task_id = task
        executor.execute_steps(plan)
    cpu = time.process_time() - cpu
    store.close()
    results.put(("ours", time.perf_counter(), executed, cpu))


def _run(child: Callable, target: Target, task_ids: list[int], steps: int, workers: int,
         postmaster: int | None):
    """Seconds from the shared start to the last end, the executors' counts per task, and
    the CPU seconds from the start that the workers (their own count) and the server used."""
    context = multiprocessing.get_context("fork")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    shares = [task_ids[i::workers] for i in range(workers)]
    processes = [context.Process(target=child, args=(target, share, steps, ready, go, results))
                 for share in shares if share]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=START_TIMEOUT)
        server = _server_cpu(postmaster)
        started = time.perf_counter()
        go.set()
        ends, executed, client = [], {}, 0.0
        for _ in processes:
            _, ended, counts, cpu = results.get(timeout=600)
            ends.append(ended)
            executed.update(counts)
            client += cpu
        after = _server_cpu(postmaster)
        used = None if server is None or after is None else after - server
        return max(ends) - started, executed, (client, used)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        if any(p.exitcode != 0 for p in processes):
            raise RuntimeError(f"a worker process failed: exit codes {[p.exitcode for p in processes]}")


def _postmaster(admin) -> int | None:
    """The server's postmaster pid, when the server runs on this machine and we may read it."""
    with admin.cursor() as cur:
        cur.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        (directory,) = cur.fetchone()
    try:
        with open(os.path.join(directory, "postmaster.pid")) as handle:
            return int(handle.readline())
    except (OSError, ValueError):
        return None


def _server_cpu(postmaster: int | None) -> float | None:
    """CPU seconds the server has used: the postmaster's own, its reaped children's (the
    backends of connections that ended), and its live children's."""
    if postmaster is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, parent = int(name), int(fields[1])
        if pid == postmaster:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        elif parent == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _measured(child, target, ids, steps, workers, postmaster):
    """_run, with the CPU per step from the start (µs) of the workers and of the server."""
    seconds, executed, (client, server) = _run(child, target, ids, steps, workers, postmaster)
    count = len(ids) * steps
    return seconds, executed, (1e6 * client / count, None if server is None else 1e6 * server / count)


def reference_tables(admin, make: bool) -> None:
    """Drop the floor's table and the ledger's copy; with ``make``, create them afresh."""
    with admin.cursor() as cur:
        for table in (FLOOR_TABLE, LEDGER_COPY):
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        if make:
            cur.execute(FLOOR_DDL)
            cur.execute(f"CREATE TABLE {LEDGER_COPY} (LIKE jr_step_rewards INCLUDING ALL)")


def _checkpoint(admin) -> None:
    with admin.cursor() as cur, contextlib.suppress(Exception):
        cur.execute("CHECKPOINT")  # each run starts from a clean WAL position


#: What each round runs after the floor: (key, the child, whether its tasks go to the ledger).
CONFIGURATIONS = (("ours", _ours_child, True), ("copy", _ledger_copy_child, False),
                  ("statements", _statements_child, True))


def measure_workers(target: Target, workers: int, tasks: int, steps: int, repeat: int,
                    out: Callable[[str], None], keep: bool) -> dict:
    schema.create_tables(target)
    admin = target.connect()
    admin.autocommit = True
    store = CheckpointStore(target)
    ledger_tasks: dict[int, int] = {}
    figures: dict = {"duplicates": 0, "lost": 0}
    for key in ("floor", *(key for key, _, _ in CONFIGURATIONS)):
        figures[key], figures[f"{key}_cpu"], figures[f"{key}_ratios"] = [], [], []
    postmaster = _postmaster(admin)
    try:
        reference_tables(admin, make=True)
        total = tasks * steps
        for round_number in range(repeat + 1):  # round 0 warms up and is not counted
            base = TASK_BASE + round_number * tasks * (1 + len(CONFIGURATIONS))
            _checkpoint(admin)
            floor_s, _, floor_cpu = _measured(_floor_child, target, list(range(base, base + tasks)),
                                              steps, workers, postmaster)
            if round_number:
                figures["floor"].append(total / floor_s)
                figures["floor_cpu"].append(floor_cpu)
            for index, (key, child, ledger) in enumerate(CONFIGURATIONS, start=1):
                _checkpoint(admin)
                ids = list(range(base + index * tasks, base + (index + 1) * tasks))
                seconds, executed, cpu = _measured(child, target, ids, steps, workers, postmaster)
                if ledger:
                    ledger_tasks.update(dict.fromkeys(ids, steps))
                    figures["duplicates"] += sum(max(executed.get(t, 0) - steps, 0) for t in ids)
                if round_number:
                    figures[key].append(total / seconds)
                    figures[f"{key}_cpu"].append(cpu)
                    figures[f"{key}_ratios"].append(seconds / floor_s)
        figures["ratios"] = figures["ours_ratios"]
        figures["lost"], figures["left"] = _check(admin, ledger_tasks)
        out(f"rows check: {len(ledger_tasks)} tasks x {steps} steps: {figures['lost']} steps without "
            f"their row, {figures['duplicates']} run twice, {figures['left']} checkpoint rows left")
    finally:
        if not keep:
            for task in ledger_tasks:
                store.forget_task(task)
            reference_tables(admin, make=False)
        store.close()
        admin.close()
    return figures


def _check(admin, tasks: dict[int, int]) -> tuple[int, int]:
    with admin.cursor() as cur:
        cur.execute("SELECT task_id, count(*) FROM jr_step_rewards WHERE task_id = ANY(%s) "
                    "AND execution_result = 'success' GROUP BY task_id", (list(tasks),))
        rows = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM jr_task_checkpoints WHERE task_id = ANY(%s)", (list(tasks),))
        left = cur.fetchone()[0]
    return sum(n - rows.get(t, 0) for t, n in tasks.items()), left


def report_workers(figures: dict, workers: int) -> list[str]:
    def spread(values, fmt):
        return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"

    def rate(v):
        return f"{v:,.0f}"

    def ratio(v):
        return f"{v:.2f}x"

    met = "met" if statistics.median(figures["ratios"]) <= 1.5 else "MISSED"
    return [
        f"{workers} processes at once, median (range) over {len(figures['ratios'])} paired rounds:",
        f"  floor: one autocommit upsert per step   {spread(figures['floor'], rate)} steps/s",
        f"  decorated (@checkpointed_steps)         {spread(figures['ours'], rate)} steps/s",
        f"  decorated / floor (time, within a pair) {spread(figures['ratios'], ratio)}"
        f"  (target <= 1.5x: {met})",
        "  what it is made of, in the same rounds (time / floor):",
        f"    the ledger's statements alone         {spread(figures['statements_ratios'], ratio)}"
        "  (begin, a record a step, through CheckpointStore)",
        f"    the ledger's table alone              {spread(figures['copy_ratios'], ratio)}"
        "  (an upsert of a row of jr_step_rewards's shape: no fence, no lease)",
        f"  steps run twice: {figures['duplicates']}; steps without their row: {figures['lost']}; "
        f"checkpoint rows left: {figures['left']}",
        *_cpu_lines(figures),
    ]


def _cpu_lines(figures: dict) -> list[str]:
    """Where the time goes: CPU per step of the worker processes and of the server (medians).
    With every process on the same cores, throughput follows their sum."""
    lines = ["  CPU per step (median µs)             workers   server    sum"]
    for label, key in (("floor", "floor_cpu"), ("decorated", "ours_cpu"),
                       ("the ledger's statements alone", "statements_cpu"),
                       ("the ledger's table alone", "copy_cpu")):
        client = statistics.median(c for c, _ in figures[key])
        servers = [s for _, s in figures[key] if s is not None]
        server = statistics.median(servers) if servers else None
        shown = f"{server:8.0f} {client + server:7.0f}" if server is not None else "       ?       ?"
        lines.append(f"    {label:34} {client:8.0f} {shown}")
    return lines
