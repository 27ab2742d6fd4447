#!/usr/bin/env python3
"""What a durable per-step checkpoint costs: jr-checkpoint against the floor and against DBOS.

    python benchmarks/bench_checkpoint.py [--steps 1000] [--repeat 5] [--dsn DSN] [--keep]
    python benchmarks/bench_checkpoint.py --workers 16 [--tasks 160] [--steps 10] [...]
    python benchmarks/bench_checkpoint.py --workers 16 --split [...]

One run, one PostgreSQL server (a throwaway embedded one unless --dsn is given), N no-op
steps, each configuration timed --repeat times (the median is shown):

- undecorated: the host's loop, no checkpoints;
- decorated, fresh task: every step executed and recorded (one commit per step);
- decorated, full resume: the same task again, every step skipped from the ledger;
- the floor: one autocommit upsert of one row per step into an ordinary (logged) table,
  through psycopg2: the least a durable per-step checkpoint can cost; and the same into a
  table of the seed's shape (its columns and indexes), the least it costs in that schema;
- DBOS Transact: the same N no-op steps as @DBOS.step calls in one @DBOS.workflow, its
  system database on the same server (skipped, with the reason, if DBOS cannot run).

``--workers N`` is the fleet's mode instead (benchmarks/bench_workers.py): N processes at once,
the decorator against N processes doing the floor's upsert, in paired rounds; with ``--split``,
where the server's time goes, the ledger's statements one kind at a time (bench_split.py).

A benchmark, not a test: tests/integration/test_benchmark.py runs it with a small N only to
check that it still works and wrote every row; the figures are never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from jr_checkpoint import CheckpointStore, checkpointed_steps, demo, embedded, reports, schema
from jr_checkpoint.dsn import Target, first_line, resolve
from jr_checkpoint.sql import SCHEMA

FLOOR_TABLE = "jr_bench_floor"
FLOOR_DDL = f"""CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} (
    task_id INTEGER NOT NULL,
    step_number INTEGER NOT NULL,
    execution_result VARCHAR(20) NOT NULL,
    execution_time_ms INTEGER,
    updated_at TIMESTAMP DEFAULT NOW(),
    PRIMARY KEY (task_id, step_number))"""
FLOOR_UPSERT = f"""INSERT INTO {FLOOR_TABLE} (task_id, step_number, execution_result, execution_time_ms)
VALUES (%s, %s, 'success', 0)
ON CONFLICT (task_id, step_number) DO UPDATE SET
    execution_result = EXCLUDED.execution_result, updated_at = NOW()"""
# The same, into a table of the seed's shape: jr_step_rewards's columns, constraints and the
# seed's two indexes. The least one durable step record costs in the schema the library is
# bound to (the seed's), as the notes measure it; the plain floor above is cheaper still.
SEED_FLOOR_TABLE = "jr_bench_seed_floor"


def _seed_floor_ddl() -> str:
    """schema.sql's own jr_step_rewards and the seed's two indexes, under another name (the
    DDL lives only in schema.sql; the dashboard's indexes, not the seed's, are left out)."""
    seed = SCHEMA.split("-- Not in the seed")[0]
    table = re.search(r"CREATE TABLE IF NOT EXISTS jr_step_rewards \(.*?\n\);", seed, re.DOTALL)[0]
    indexes = re.findall(r"CREATE INDEX IF NOT EXISTS \w+\s+ON jr_step_rewards\(\w+\);", seed)
    ddl = "\n".join([table, *(index.replace("idx_step_rewards", f"idx_{SEED_FLOOR_TABLE}")
                                for index in indexes)])
    return ddl.replace("jr_step_rewards", SEED_FLOOR_TABLE)


SEED_FLOOR_DDL = _seed_floor_ddl()
SEED_FLOOR_UPSERT = f"""INSERT INTO {SEED_FLOOR_TABLE} (task_id, step_number, step_type, target_file,
    step_content_hash, execution_result, execution_time_ms, error_detail)
VALUES (%s, %s, 'noop', %s, %s, 'success', 0, NULL)
ON CONFLICT (task_id, step_number) DO UPDATE SET
    step_type = EXCLUDED.step_type, target_file = EXCLUDED.target_file,
    step_content_hash = EXCLUDED.step_content_hash, execution_result = EXCLUDED.execution_result,
    execution_time_ms = EXCLUDED.execution_time_ms, error_detail = EXCLUDED.error_detail,
    updated_at = NOW()"""
WARMUP_STEPS = 20


def executor_class() -> type:
    """A fresh no-op executor class with the host's loop (fresh: a decorator hooks ``execute``)."""

    class NoopExecutor(demo.TaskExecutor):
        """The demo's executor (the host's execute_steps loop) with steps that do nothing."""

        def __init__(self) -> None:
            super().__init__(Path("."))

        def execute(self, step):
            return {"success": True}

    return NoopExecutor


def make_steps(count: int) -> list[dict]:
    return [{"type": "noop", "path": f"file_{i}.txt", "n": i} for i in range(count)]


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def connect(target: Target):
    conn = target.connect()
    conn.autocommit = True
    return conn


# -- the configurations --------------------------------------------------------------------------

class Ledger:
    """The decorated executor on one store; each fresh run uses a task id never used before."""

    def __init__(self, target: Target):
        self.store = CheckpointStore(target)
        base = executor_class()

        class Checkpointed(base):
            execute_steps = checkpointed_steps(store=self.store)(base.execute_steps)

        self.cls = Checkpointed
        self.next_id = reports.next_demo_task_id(target)
        self.tasks: dict[int, int] = {}  # task id -> steps it must have recorded

    def new_task(self, steps: int) -> int:
        task_id, self.next_id = self.next_id, self.next_id - 1
        self.tasks[task_id] = steps
        return task_id

    def run(self, task_id: int, steps: list[dict]) -> list:
        executor = self.cls()
        executor._current_task_id = task_id
        results = executor.execute_steps(steps)
        if len(results) != len(steps) or not all(r.get("success") for r in results):
            raise RuntimeError(f"task {task_id}: not every step succeeded")
        return results

    def fresh(self, steps: list[dict]) -> tuple[int, float]:
        task_id = self.new_task(len(steps))
        return task_id, timed(lambda: self.run(task_id, steps))

    def resume(self, task_id: int, steps: list[dict]) -> float:
        skipped = []
        seconds = timed(lambda: skipped.extend(self.run(task_id, steps)))
        if not all(r.get("checkpoint_hit") for r in skipped):
            raise RuntimeError(f"task {task_id}: the resume ran steps again")
        return seconds


def statement_run(store: CheckpointStore, task_id: int, count: int) -> float:
    """The ledger's own per-step statement, sent directly: the decorator minus its Python."""
    owner = store.begin_task(task_id, count).owner

    def run() -> None:
        for number in range(count):
            store.record_step(task_id, number, owner=owner, execution_result="success",
                              step_type="noop", target_file=f"file_{number}.txt",
                              content_hash="0" * 64, execution_time_ms=0,
                              last_completed_step=number, total_steps=count)
    seconds = timed(run)
    store.release_task(task_id, owner, completed=True)
    return seconds


def floor_run(conn, task_id: int, count: int) -> float:
    with conn.cursor() as cur:
        def run() -> None:
            for number in range(count):
                cur.execute(FLOOR_UPSERT, (task_id, number))
        return timed(run)


def seed_floor_run(conn, task_id: int, count: int) -> float:
    with conn.cursor() as cur:
        def run() -> None:
            for number in range(count):
                cur.execute(SEED_FLOOR_UPSERT, (task_id, number, f"file_{number}.txt", "0" * 64))
        return timed(run)


def sqlalchemy_url(target: Target, dbname: str) -> str:
    """A SQLAlchemy URL for ``dbname`` on the server of ``target`` (DBOS wants a URL)."""
    from sqlalchemy.engine import URL

    params = dict(target.params)
    host, port = params.pop("host", None), params.pop("port", None)
    user, password = params.pop("user", None), params.pop("password", None)
    params.pop("dbname", None)
    query = {key: str(value) for key, value in params.items()}
    if host and str(host).startswith("/"):
        query["host"], host = str(host), None
    return URL.create("postgresql", username=user, password=password, host=host,
                      port=int(port) if port else None, database=dbname,
                      query=query).render_as_string(hide_password=False)


class Dbos:
    """DBOS Transact on a system database of its own on the same server."""

    def __init__(self, target: Target, dbname: str, created: bool):
        from dbos import DBOS, SetWorkflowID  # the 'bench' extra

        self.DBOS, self.SetWorkflowID = DBOS, SetWorkflowID
        self.dbname, self.created = dbname, created
        DBOS(config={"name": "jr_checkpoint_bench", "system_database_url": sqlalchemy_url(target, dbname),
                     "log_level": "WARNING"})

        @DBOS.step()
        def noop_step(n: int) -> dict:
            return {"success": True}

        @DBOS.workflow()
        def noop_workflow(count: int) -> int:
            for n in range(count):
                noop_step(n)
            return count

        self.workflow = noop_workflow
        DBOS.launch()
        self.workflows: list[tuple[str, int]] = []

    def run(self, count: int) -> float:
        workflow_id = f"jr-bench-{os.getpid()}-{time.time_ns()}"
        self.workflows.append((workflow_id, count))
        with self.SetWorkflowID(workflow_id):
            return timed(lambda: self.workflow(count))

    def check_rows(self, target: Target) -> list[str]:
        conn = connect(resolve(embedded.database_uri(target, self.dbname)))
        problems = []
        with contextlib.closing(conn), conn.cursor() as cur:
            for workflow_id, count in self.workflows:
                cur.execute("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = %s",
                            (workflow_id,))
                found = cur.fetchone()[0]
                if found != count:
                    problems.append(f"DBOS workflow {workflow_id}: {found} of {count} step rows")
        return problems

    def close(self) -> None:
        self.DBOS.destroy(destroy_registry=True)


def start_dbos(target: Target, admin, dbname: str, out: Callable[[str], None]) -> Dbos | None:
    try:
        import dbos  # noqa: F401
    except ImportError:
        out("DBOS: skipped, the dbos package is not installed (pip install 'jr-checkpoint[bench]')")
        return None
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            created = cur.fetchone() is None
            if created:
                cur.execute(f'CREATE DATABASE "{dbname}"')
        return Dbos(target, dbname, created)
    except Exception as exc:  # report why and carry on with the rest
        out(f"DBOS: skipped, it cannot run here: {type(exc).__name__}: {first_line(exc)}")
        return None


# -- one run ---------------------------------------------------------------------------------------

class Bench:
    """Every configuration on one server; remembers each task it ran, to check its rows."""

    def __init__(self, target: Target, out: Callable[[str], None]):
        schema.create_tables(target)
        self.target, self.admin, self.ledger = target, connect(target), Ledger(target)
        self.plain = executor_class()
        self.floor_tasks: dict[int, int] = {}  # task id -> steps, in the floor table
        self.seed_floor_tasks: dict[int, int] = {}  # the same, in the seed-row floor table
        with self.admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}, {SEED_FLOOR_TABLE}")  # never an update
            cur.execute(FLOOR_DDL)
            cur.execute(SEED_FLOOR_DDL)
            cur.execute("SELECT current_database()")
            dbos_db = f"{cur.fetchone()[0]}_jr_bench_dbos"
        self.dbos = start_dbos(target, self.admin, dbos_db, out)

    def floor_task(self, count: int, tasks: dict[int, int]) -> int:
        task_id = -1 - len(tasks)
        tasks[task_id] = count
        return task_id

    def round(self, steps: list[dict]) -> dict[str, float]:
        """One run of each configuration, in seconds. The floor is run just before and just
        after the fresh task, and their mean taken: the server's commit latency drifts, and
        the ratio that matters is of runs side by side."""
        count, ledger = len(steps), self.ledger
        times = {"undecorated": timed(lambda: self.plain().execute_steps(steps))}
        before = floor_run(self.admin, self.floor_task(count, self.floor_tasks), count)
        task_id, times["fresh"] = ledger.fresh(steps)
        after = floor_run(self.admin, self.floor_task(count, self.floor_tasks), count)
        times["floor"] = (before + after) / 2
        times["resume"] = ledger.resume(task_id, steps)
        times["statement"] = statement_run(ledger.store, ledger.new_task(count), count)
        times["seed_floor"] = seed_floor_run(
            self.admin, self.floor_task(count, self.seed_floor_tasks), count)
        if self.dbos is not None:
            times["dbos"] = self.dbos.run(count)
        return times

    def check_rows(self) -> list[str]:
        """What is missing: every executed step must have left its row."""
        with self.admin.cursor() as cur:
            cur.execute("SELECT task_id, count(*) FILTER (WHERE execution_result = 'success') "
                        "FROM jr_step_rewards WHERE task_id = ANY(%s) GROUP BY task_id",
                        (list(self.ledger.tasks),))
            ledger_rows = dict(cur.fetchall())
            cur.execute(f"SELECT task_id, count(*) FROM {FLOOR_TABLE} GROUP BY task_id")
            floor_rows = dict(cur.fetchall())
            cur.execute(f"SELECT task_id, count(*) FROM {SEED_FLOOR_TABLE} GROUP BY task_id")
            seed_floor_rows = dict(cur.fetchall())
        problems = [f"ledger task {t}: {ledger_rows.get(t, 0)} of {n} rows"
                    for t, n in self.ledger.tasks.items() if ledger_rows.get(t, 0) != n]
        problems += [f"floor task {t}: {floor_rows.get(t, 0)} of {n} rows"
                     for t, n in self.floor_tasks.items() if floor_rows.get(t, 0) != n]
        problems += [f"seed-row floor task {t}: {seed_floor_rows.get(t, 0)} of {n} rows"
                     for t, n in self.seed_floor_tasks.items() if seed_floor_rows.get(t, 0) != n]
        if self.dbos is not None:
            problems += self.dbos.check_rows(self.target)
        return problems

    def close(self, keep: bool) -> None:
        if self.dbos is not None:
            self.dbos.close()
        if not keep:
            for task_id in self.ledger.tasks:
                self.ledger.store.forget_task(task_id)
            with self.admin.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}, {SEED_FLOOR_TABLE}")
                if self.dbos is not None and self.dbos.created:
                    cur.execute(f'DROP DATABASE IF EXISTS "{self.dbos.dbname}" WITH (FORCE)')
        self.ledger.store.close()
        self.admin.close()


def measure(target: Target, steps_count: int, repeat: int, out: Callable[[str], None],
            keep: bool) -> dict[str, list[float]]:
    """Seconds per configuration, one entry per repetition, after a warm-up round."""
    bench = Bench(target, out)
    times: dict[str, list[float]] = {name: [] for name in LABELS}
    try:
        bench.round(make_steps(WARMUP_STEPS))
        steps = make_steps(steps_count)
        for _ in range(repeat):
            for name, seconds in bench.round(steps).items():
                times[name].append(seconds)
        problems = bench.check_rows()
        if problems:
            raise RuntimeError("rows missing: " + "; ".join(problems))
        out(f"rows check: {len(bench.ledger.tasks)} ledger tasks, {len(bench.floor_tasks)} floor tasks"
            + (f", {len(bench.dbos.workflows)} DBOS workflows" if bench.dbos is not None else "")
            + ": every executed step has its row")
    finally:
        bench.close(keep)
    return times


# -- the table -------------------------------------------------------------------------------------

LABELS = {
    "undecorated": "undecorated executor",
    "fresh": "decorated, fresh task (every step recorded)",
    "resume": "decorated, full resume (every step skipped)",
    "statement": "the ledger's statement alone (record_step x N)",
    "floor": "floor: one autocommit upsert per step",
    "seed_floor": "the same, of a row of the seed's table",
    "dbos": "DBOS Transact: @DBOS.step x N in one @DBOS.workflow",
}


def paired(times: dict[str, list[float]], name: str, base: str,
           minus: str | None = None) -> float:
    """The median over rounds of ``(name - minus) / base`` within each round. Each round runs
    every configuration back to back, so a ratio within it cancels the drift of the server's
    commit latency between rounds (on this machine it moves by a fifth within minutes)."""
    ratios = [((value - (times[minus][i] if minus else 0.0)) / times[base][i])
              for i, value in enumerate(times[name])]
    return statistics.median(ratios)


def report(times: dict[str, list[float]], steps: int) -> list[str]:
    ms = {name: statistics.median(values) * 1000 for name, values in times.items() if values}
    per_step = {name: value / steps for name, value in ms.items()}
    width = max(len(label) for label in LABELS.values())
    lines = [f"{'configuration':<{width}}  {'ms/step':>9}  {'total ms':>9}  {'vs floor':>8}",
             f"{'-' * width}  {'-' * 9}  {'-' * 9}  {'-' * 8}"]
    for name, label in LABELS.items():
        if name not in ms:
            lines.append(f"{label:<{width}}  {'(not run)':>9}")
            continue
        ratio = f"{paired(times, name, 'floor'):.2f}x" if name != "undecorated" else ""
        lines.append(f"{label:<{width}}  {per_step[name]:>9.4f}  {ms[name]:>9.1f}  {ratio:>8}".rstrip())
    return lines + ["", "(vs floor: the median of the ratios within each round)", ""] + targets(times)


def targets(times: dict[str, list[float]]) -> list[str]:
    overhead = paired(times, "fresh", "floor", minus="undecorated")
    seed = paired(times, "fresh", "seed_floor", minus="undecorated")
    resume = paired(times, "resume", "fresh")
    dbos = paired(times, "dbos", "fresh") if times.get("dbos") else None
    checks = [
        ("decorator overhead per executed step / floor", f"{overhead:.2f}x", "<= 1.5x", overhead <= 1.5),
        ("  the same / the seed's-row floor", f"{seed:.2f}x", "<= 1.5x", seed <= 1.5),
        ("full resume / fresh run", f"{100 * resume:.1f}%", "< 10%", resume < 0.1),
        ("DBOS per step / decorated per step", "n/a" if dbos is None else f"{dbos:.2f}x", ">= 3x",
         None if dbos is None else dbos >= 3),
    ]
    verdicts = {None: "not measured", True: "met", False: "MISSED"}
    return ["targets:"] + [f"  {label:<46} {value:>8}  (target {goal}): {verdicts[met]}"
                           for label, value, goal, met in checks]


def describe_server(target: Target) -> str:
    with contextlib.closing(connect(target)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version'), current_setting('fsync'), "
                    "current_setting('synchronous_commit')")
        version, fsync, sync = cur.fetchone()
    where = "unix socket" if str(target.params.get("host", "")).startswith("/") else "TCP"
    return f"PostgreSQL {version} ({where}; fsync={fsync}, synchronous_commit={sync})"


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[tuple[Target, str]]:
    if dsn:
        target = resolve(dsn)
        yield target, f"the given server, {target.describe()}"
        return
    with tempfile.TemporaryDirectory(prefix="jr-bench-") as scratch:
        with embedded.server(Path(scratch) / "pgdata", keep_data=False) as target:
            yield target, "a throwaway embedded server"


def main(argv: list[str] | None = None) -> int:
    # A host that configured logging at WARNING: the per-step INFO lines cost nothing to show.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="steps per run (default: 1000); with --workers, per task (default: 10)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="N processes at once against N doing the floor (benchmarks/bench_workers.py)")
    parser.add_argument("--tasks", type=int, default=160, help="with --workers: tasks per run (default: 160)")
    parser.add_argument("--split", action="store_true",
                        help="with --workers: where the server's time goes, statement by statement "
                             "(benchmarks/bench_split.py)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per configuration; the median is shown")
    parser.add_argument("--dsn", help="run on this server instead of a throwaway embedded one")
    parser.add_argument("--keep", action="store_true",
                        help="leave the rows, the floor table and the DBOS database in place")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 10 if args.workers else 1000
    if args.steps < 1 or args.repeat < 1 or args.workers < 0 or args.tasks < 1:
        parser.error("--steps, --repeat and --tasks must be at least 1, --workers at least 0")
    if args.split and not args.workers:
        parser.error("--split goes with --workers N")
    if args.workers:
        return workers_main(args)
    with server(args.dsn) as (target, where):
        print(f"jr-checkpoint benchmark: {args.steps} no-op steps, median of {args.repeat} run(s), "
              f"on {where}")
        print(f"server: {describe_server(target)}")
        print(f"client: Python {platform.python_version()} on {platform.machine()}, "
              f"{os.cpu_count()} CPU(s), {platform.platform(terse=True)}")
        times = measure(target, args.steps, args.repeat, lambda line: print(line, flush=True), args.keep)
    print()
    for line in report(times, args.steps):
        print(line)
    return 0


def workers_main(args: argparse.Namespace) -> int:
    import bench_workers

    with server(args.dsn) as (target, where):
        print(f"jr-checkpoint benchmark, workers mode: {args.workers} processes, {args.tasks} tasks x "
              f"{args.steps} steps a run, {args.repeat} paired round(s), on {where}")
        print(f"server: {describe_server(target)}")
        print(f"client: Python {platform.python_version()} on {platform.machine()}, "
              f"{os.cpu_count()} CPU(s), {platform.platform(terse=True)}")
        if args.split:
            import bench_split

            split = bench_split.measure_split(target, args.workers, args.tasks, args.steps, args.repeat)
            print()
            for line in bench_split.report_split(split, args.workers, args.steps):
                print(line)
            return 0 if split["refused"] == 0 else 1
        figures = bench_workers.measure_workers(target, args.workers, args.tasks, args.steps, args.repeat,
                                                lambda line: print(line, flush=True), args.keep)
    print()
    for line in bench_workers.report_workers(figures, args.workers):
        print(line)
    return 0 if figures["duplicates"] == figures["lost"] == figures["left"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
