"""The benchmark's workers mode: N processes at once, the decorator against the one-upsert floor.

    python benchmarks/bench_checkpoint.py --workers 16 [--tasks 160] [--steps 10] [--repeat 5]

Each round runs the floor (N processes, each upserting its share of the tasks' steps into the
floor table, one autocommit statement a step) and then the library (N processes, each running
its share of the tasks through the real @checkpointed_steps, one CheckpointStore a process),
then the floor again, and so on: ratios are taken within a pair, as in the one-process mode.
Every process connects and builds its executor before a shared start; a run's time is from
that start to the last process's end. Afterwards every step must have run exactly once
(counted by the executors) and left exactly one success row, with no checkpoint row left.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import statistics
import time
from collections.abc import Callable

from jr_checkpoint import CheckpointStore, checkpointed_steps, schema
from jr_checkpoint.dsn import Target

START_TIMEOUT = 60  # seconds for every process to connect and wait at the start
TASK_BASE = 1_700_000_000  # task ids far from the host's and the demo's


def _floor_child(target: Target, tasks: list[int], steps: int, ready, go, results) -> None:
    from bench_checkpoint import FLOOR_UPSERT

    conn = target.connect()
    conn.autocommit = True
    with contextlib.closing(conn), conn.cursor() as cur:
        ready.put(1)
        go.wait(START_TIMEOUT)
        for task in tasks:
            for number in range(steps):
                cur.execute(FLOOR_UPSERT, (task, number))
    results.put(("floor", time.perf_counter(), {}))


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
    store.load_task(tasks[0])  # connect before the start, as the floor does
    ready.put(1)
    go.wait(START_TIMEOUT)
    for task in tasks:
        executor = Counted()
        executor._current_task_id = task
        executor.execute_steps(plan)
    store.close()
    results.put(("ours", time.perf_counter(), executed))


def _run(child: Callable, target: Target, task_ids: list[int], steps: int, workers: int):
    """Seconds from the shared start to the last end, and the executors' counts per task."""
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
        started = time.perf_counter()
        go.set()
        ends, executed = [], {}
        for _ in processes:
            _, ended, counts = results.get(timeout=600)
            ends.append(ended)
            executed.update(counts)
        return max(ends) - started, executed
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


def _client_cpu() -> float:
    """CPU seconds of this process's reaped children (the benchmark's worker processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measured(child, target, ids, steps, workers, postmaster):
    """_run, and the CPU per step it cost the workers and the server (µs)."""
    client, server = _client_cpu(), _server_cpu(postmaster)
    seconds, executed = _run(child, target, ids, steps, workers)
    count = len(ids) * steps
    after = _server_cpu(postmaster)
    cpu = (1e6 * (_client_cpu() - client) / count,
           None if server is None or after is None else 1e6 * (after - server) / count)
    return seconds, executed, cpu


def _checkpoint(admin) -> None:
    with admin.cursor() as cur, contextlib.suppress(Exception):
        cur.execute("CHECKPOINT")  # each run starts from a clean WAL position


def measure_workers(target: Target, workers: int, tasks: int, steps: int, repeat: int,
                    out: Callable[[str], None], keep: bool) -> dict:
    from bench_checkpoint import FLOOR_DDL, FLOOR_TABLE

    schema.create_tables(target)
    admin = target.connect()
    admin.autocommit = True
    store = CheckpointStore(target)
    ours_tasks: dict[int, int] = {}
    figures = {"floor": [], "ours": [], "ratios": [], "duplicates": 0, "lost": 0,
               "floor_cpu": [], "ours_cpu": []}
    postmaster = _postmaster(admin)
    try:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
            cur.execute(FLOOR_DDL)
        total = tasks * steps
        for round_number in range(repeat + 1):  # round 0 warms up and is not counted
            base = TASK_BASE + round_number * tasks * 2
            _checkpoint(admin)
            floor_s, _, floor_cpu = _measured(_floor_child, target, list(range(base, base + tasks)),
                                              steps, workers, postmaster)
            _checkpoint(admin)
            ids = list(range(base + tasks, base + 2 * tasks))
            ours_s, executed, ours_cpu = _measured(_ours_child, target, ids, steps, workers, postmaster)
            ours_tasks.update(dict.fromkeys(ids, steps))
            figures["duplicates"] += sum(max(executed.get(t, 0) - steps, 0) for t in ids)
            if round_number:
                figures["floor"].append(total / floor_s)
                figures["ours"].append(total / ours_s)
                figures["ratios"].append(ours_s / floor_s)
                figures["floor_cpu"].append(floor_cpu)
                figures["ours_cpu"].append(ours_cpu)
        figures["lost"], figures["left"] = _check(admin, ours_tasks)
        out(f"rows check: {len(ours_tasks)} tasks x {steps} steps: {figures['lost']} steps without "
            f"their row, {figures['duplicates']} run twice, {figures['left']} checkpoint rows left")
    finally:
        if not keep:
            for task in ours_tasks:
                store.forget_task(task)
            with admin.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
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

    return [
        f"{workers} processes at once, median (range) over {len(figures['ratios'])} paired rounds:",
        f"  floor: one autocommit upsert per step   {spread(figures['floor'], rate)} steps/s",
        f"  decorated (@checkpointed_steps)         {spread(figures['ours'], rate)} steps/s",
        f"  decorated / floor (time, within a pair) {spread(figures['ratios'], lambda v: f'{v:.2f}x')}"
        f"  (target <= 1.5x: {'met' if statistics.median(figures['ratios']) <= 1.5 else 'MISSED'})",
        f"  steps run twice: {figures['duplicates']}; steps without their row: {figures['lost']}; "
        f"checkpoint rows left: {figures['left']}",
        *_cpu_lines(figures),
    ]


def _cpu_lines(figures: dict) -> list[str]:
    """Where the time goes: CPU per step of the worker processes and of the server (medians).
    With every process on the same cores, throughput follows their sum."""
    lines = ["  CPU per step (median µs)             workers   server    sum"]
    for label, key in (("floor", "floor_cpu"), ("decorated", "ours_cpu")):
        client = statistics.median(c for c, _ in figures[key])
        servers = [s for _, s in figures[key] if s is not None]
        server = statistics.median(servers) if servers else None
        shown = f"{server:8.0f} {client + server:7.0f}" if server is not None else "       ?       ?"
        lines.append(f"    {label:34} {client:8.0f} {shown}")
    return lines
