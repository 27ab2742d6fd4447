"""@checkpointed_steps on the host stand-in, against a real PostgreSQL.

Steps edit real files; a crash is a real SIGKILL; the server really goes away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import jr_checkpoint
from jr_checkpoint import CheckpointStore, checkpointed_steps
from jr_checkpoint.decorator import unhook_execute
from tests.conftest import named, query, start_embedded_server
from tests.waiting import wait_until

WORKER = Path(__file__).with_name("worker.py")


INITIAL = "def greet():\n    return 'hello'\n"


def task_steps():
    """Five real edits; the SEARCH/REPLACE steps 0 and 4 can only apply once."""
    return [
        {"type": "search_replace", "path": "app.py", "search": "'hello'", "replace": "'hello, world'"},
        {"type": "append", "path": "app.py", "content": "# step 1\n"},
        {"type": "write", "path": "notes.txt", "content": "notes\n"},
        {"type": "append", "path": "app.py", "content": "# step 3\n"},
        {"type": "search_replace", "path": "app.py", "search": "# step 1\n", "replace": "# one\n"},
    ]


FINAL = "def greet():\n    return 'hello, world'\n# one\n# step 3\n"


@pytest.fixture(autouse=True)
def host_file(tmp_path):
    """The host's file the task edits, as it was before the task."""
    (tmp_path / "app.py").write_text(INITIAL)


def results_by_step(dsn, task_id):
    return dict(query(dsn, "SELECT step_number, execution_result FROM jr_step_rewards "
                           "WHERE task_id = %s ORDER BY step_number", (task_id,)))


@pytest.fixture
def installed(dsn):
    store = jr_checkpoint.install(dsn, target="tests.fakes:FileExecutor.execute_steps")
    from tests.fakes import FileExecutor as TaskExecutor

    yield TaskExecutor, store
    jr_checkpoint.uninstall()


def make_executor(cls, workdir, task_id):
    executor = cls(workdir)
    executor._current_task_id = task_id
    return executor


def test_without_the_library_a_retry_breaks_on_an_applied_edit(tmp_path):
    from tests.fakes import FileExecutor as TaskExecutor

    steps = task_steps()
    steps[3] = {"type": "fail", "error": "flaky"}
    executor = TaskExecutor(tmp_path)
    executor.execute_steps(steps)
    retry = executor.execute_steps(steps)
    assert retry == [{"success": False, "error": "SEARCH text not found in app.py"}]


def test_failed_step_retry_runs_only_that_step_then_finishes(installed, dsn, tmp_path):
    TaskExecutor, store = installed
    steps = task_steps()
    good_step_3 = steps[3]
    steps[3] = {"type": "fail", "error": "flaky network"}

    first = make_executor(TaskExecutor, tmp_path, 101)
    assert [r["success"] for r in first.execute_steps(steps)] == [True, True, True, False]
    assert results_by_step(dsn, 101) == {0: "success", 1: "success", 2: "success", 3: "failed"}
    assert query(dsn, "SELECT last_completed_step, total_steps, checkpoint_data->>'attempts' "
                      "FROM jr_task_checkpoints WHERE task_id = 101") == [(2, 5, "1")]

    second = make_executor(TaskExecutor, tmp_path, 101)
    assert second.execute_steps(steps)[3]["success"] is False
    assert second.executed == [steps[3]]  # only step 3 ran
    assert query(dsn, "SELECT checkpoint_data->>'attempts' FROM jr_task_checkpoints "
                      "WHERE task_id = 101") == [("2",)]

    steps[3] = good_step_3
    third = make_executor(TaskExecutor, tmp_path, 101)
    results = third.execute_steps(steps)
    assert [r.get("skipped", False) for r in results] == [True, True, True, False, False]
    assert third.executed == steps[3:]
    assert (tmp_path / "app.py").read_text() == FINAL  # every edit applied exactly once
    assert results_by_step(dsn, 101) == dict.fromkeys(range(5), "success")
    assert query(dsn, "SELECT count(*) FROM jr_task_checkpoints WHERE task_id = 101") == [(0,)]
    error = query(dsn, "SELECT step_type, target_file, error_detail, step_content_hash IS NOT NULL "
                       "FROM jr_step_rewards WHERE task_id = 101 AND step_number = 0")
    assert error == [("search_replace", "app.py", None, True)]


def test_round_trips_one_load_one_per_executed_step_none_per_skipped(installed, tmp_path):
    TaskExecutor, store = installed
    steps = [{"type": "append", "path": "log.txt", "content": f"{i}\n"} for i in range(10)]
    before = store.round_trips
    make_executor(TaskExecutor, tmp_path, 102).execute_steps(steps)
    fresh = store.round_trips - before
    before = store.round_trips
    make_executor(TaskExecutor, tmp_path, 102).execute_steps(steps)
    resumed = store.round_trips - before
    # the tables' shape (once per store), take + load, then one per executed step, the last
    # one also ending the attempt and giving the task up; then take + load and the release,
    # with every step skipped
    assert (fresh, resumed) == (12, 2)
    assert (tmp_path / "log.txt").read_text() == "".join(f"{i}\n" for i in range(10))


def run_worker(dsn, task_id, workdir, steps, wait=0.0, **popen):
    steps_file = Path(workdir) / f"steps-{task_id}-{time.monotonic_ns()}.json"
    steps_file.write_text(json.dumps(steps))
    return subprocess.Popen(
        [sys.executable, str(WORKER), dsn, str(task_id), str(workdir), str(steps_file), str(wait)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_sigkill_mid_step_then_a_new_process_resumes(dsn, tmp_path):
    steps = task_steps()
    steps.insert(3, {"type": "shell", "command": "touch started.flag && sleep 60 && touch slept.flag"})
    child = run_worker(dsn, 103, tmp_path, steps, start_new_session=True)
    wait_until((tmp_path / "started.flag").exists, 30, "the worker to reach the long step", alive=child)
    os.killpg(child.pid, signal.SIGKILL)  # the worker and its shell step, mid-step
    assert child.wait(10) == -signal.SIGKILL
    assert results_by_step(dsn, 103) == {0: "success", 1: "success", 2: "success"}

    steps[3] = {"type": "shell", "command": "touch resumed.flag"}
    retry = run_worker(dsn, 103, tmp_path, steps, wait=10)
    out, err = retry.communicate(timeout=60)
    assert retry.returncode == 0, err
    results = json.loads(out)
    assert [r.get("skipped", False) for r in results] == [True] * 3 + [False] * 3
    assert "[CHECKPOINT] Step 2 already succeeded, skipping" in err
    assert "[CHECKPOINT] Step 3 already succeeded" not in err
    assert (tmp_path / "app.py").read_text() == FINAL
    assert (tmp_path / "resumed.flag").exists() and not (tmp_path / "slept.flag").exists()
    assert results_by_step(dsn, 103) == dict.fromkeys(range(6), "success")


def test_three_processes_on_one_task_run_each_step_once(dsn, tmp_path):
    steps = [{"type": "append", "path": "once.txt", "content": f"line {i}\n"} for i in range(8)]
    steps.insert(4, {"type": "shell", "command": "sleep 0.3"})
    workers = [run_worker(dsn, 104, tmp_path, steps, wait=30) for _ in range(3)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs
    assert (tmp_path / "once.txt").read_text() == "".join(f"line {i}\n" for i in range(8))
    ran = [sum(not r.get("skipped", False) for r in json.loads(out)) for out, _ in outputs]
    assert sorted(ran) == [0, 0, 9]


def test_a_second_worker_without_wait_is_refused_before_any_step(dsn, tmp_path):
    slow = [{"type": "shell", "command": "touch busy.flag && sleep 2"}]
    first = run_worker(dsn, 105, tmp_path, slow + [{"type": "append", "path": "x", "content": "a"}])
    wait_until((tmp_path / "busy.flag").exists, 30, "the first worker's slow step", alive=first)
    second = run_worker(dsn, 105, tmp_path, [{"type": "append", "path": "x", "content": "b"}])
    _, err = second.communicate(timeout=30)
    assert second.returncode == 3 and "another worker" in err
    assert first.wait(30) == 0
    assert (tmp_path / "x").read_text() == "a"


def test_a_terminated_backend_does_not_hand_the_task_to_a_waiting_worker(dsn, tmp_path):
    """The owner's session dies mid-step while a second worker waits: the owner lives, so it
    keeps the task (its lease), finishes, and the second worker then finds every step done."""
    gate = {"type": "shell",
            "command": "echo start >> gate.log; while [ ! -f go ]; do sleep 0.01; done; echo end >> gate.log"}
    steps = [{"type": "append", "path": "x", "content": "a"}, gate,
             {"type": "append", "path": "x", "content": "b"}]
    first = run_worker(dsn, 110, tmp_path, steps)
    wait_until((tmp_path / "gate.log").exists, 30, "the first worker's gated step", poll=0.01,
               alive=first)
    second = run_worker(dsn, 110, tmp_path, steps, wait=60)
    names = {f"jr-checkpoint pid {first.pid}", f"jr-checkpoint pid {second.pid}"}
    wait_until(lambda: len(query(dsn, "SELECT 1 FROM pg_stat_activity WHERE application_name = ANY(%s)",
                                 (list(names),))) >= 2,
               30, "both workers' sessions (the second one connected, waiting)", poll=0.01, alive=second)
    ((terminated,),) = query(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = %s", (f"jr-checkpoint pid {first.pid}",))
    assert terminated
    (tmp_path / "go").touch()
    out_first, err_first = first.communicate(timeout=60)
    out_second, err_second = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err_first, err_second)
    assert (tmp_path / "gate.log").read_text() == "start\nend\n"  # the gate step ran once
    assert (tmp_path / "x").read_text() == "ab"
    assert [r.get("skipped") for r in json.loads(out_second)] == [True, True, True]
    assert results_by_step(dsn, 110) == {0: "success", 1: "success", 2: "success"}


class RestartingExecutor:
    """Mixin: a step {'type': 'db', 'action': 'stop'|'start'|'restart'} drives the server."""

    server = None

    def execute(self, step):
        if step.get("type") == "db":
            if step["action"] in ("stop", "restart"):
                self.server.stop()
            if step["action"] in ("start", "restart"):
                self.server.ensure_postgres_running()
            return {"success": True}
        return super().execute(step)


@pytest.fixture
def private_server():
    """A server of this test's own, so stopping it disturbs nobody."""
    server = start_embedded_server()
    from jr_checkpoint import dsn as dsn_module
    from jr_checkpoint import schema

    schema.create_tables(dsn_module.resolve(server.get_uri()))
    yield server
    server.ensure_postgres_running()
    server.cleanup()
    shutil.rmtree(server.pgdata.parent, ignore_errors=True)


@pytest.fixture
def restarting(private_server):
    """(uri, store, Host): the stand-in with 'db' steps, checkpointed on the private server."""
    from tests.fakes import FileExecutor as TaskExecutor

    uri = private_server.get_uri()
    store = CheckpointStore(named(uri, "the store"))
    cls = type("Host", (RestartingExecutor, TaskExecutor), {"server": private_server})
    cls.execute_steps = checkpointed_steps(TaskExecutor.execute_steps, store=store)
    yield uri, store, cls
    store.close()
    unhook_execute()


def test_server_restart_mid_task_then_recording_goes_on(restarting, tmp_path, caplog):
    uri, store, cls = restarting
    steps = [{"type": "append", "path": "r.txt", "content": "a\n"},
             {"type": "db", "action": "restart"},
             {"type": "append", "path": "r.txt", "content": "b\n"},
             {"type": "append", "path": "r.txt", "content": "c\n"}]
    old_backend = store.connector.backend_pid
    results = make_executor(cls, tmp_path, 106).execute_steps(steps)
    assert [r["success"] for r in results] == [True] * 4
    assert (tmp_path / "r.txt").read_text() == "a\nb\nc\n"
    assert results_by_step(uri, 106) == dict.fromkeys(range(4), "success")
    assert store.connector.backend_pid != old_backend
    assert query(uri, "SELECT count(*) FROM jr_task_checkpoints WHERE task_id = 106") == [(0,)]
    assert not any("unchecked" in m for m in caplog.messages)  # rode out the restart


def test_server_down_longer_than_the_outage_runs_on_then_writes_what_it_kept(private_server, tmp_path,
                                                                            caplog):
    """Past `outage` seconds the steps run unchecked; their records wait and land when it is back."""
    from tests.fakes import FileExecutor

    uri = private_server.get_uri()
    store = CheckpointStore(uri, outage=0.3)
    cls = type("Host", (RestartingExecutor, FileExecutor), {"server": private_server})
    cls.execute_steps = checkpointed_steps(FileExecutor.execute_steps, store=store)
    steps = [{"type": "append", "path": "d.txt", "content": "a\n"},
             {"type": "db", "action": "stop"},
             {"type": "append", "path": "d.txt", "content": "b\n"},
             {"type": "db", "action": "start"},
             {"type": "append", "path": "d.txt", "content": "c\n"}]
    try:
        results = make_executor(cls, tmp_path, 107).execute_steps(steps)
        assert [r["success"] for r in results] == [True] * 5  # the host's own results
        assert (tmp_path / "d.txt").read_text() == "a\nb\nc\n"
        assert sum("running the rest unchecked" in m for m in caplog.messages) == 1
        # Nothing was lost: the records kept during the outage were written when it came back.
        assert results_by_step(uri, 107) == dict.fromkeys(range(5), "success")
        assert query(uri, "SELECT count(*) FROM jr_task_checkpoints WHERE task_id = 107") == [(0,)]
    finally:
        store.close()
        unhook_execute()

def test_hostile_inputs_are_stored_or_refused_cleanly(installed, dsn, tmp_path):
    TaskExecutor, store = installed
    executor = make_executor(TaskExecutor, tmp_path, 108)
    huge = "x" * (1024 * 1024)
    steps = [{"type": "fail", "error": "it's %s; DROP TABLE jr_step_rewards; -- \x00 " + huge,
              "path": "we'ird %(x)s \x00.txt"}]
    results = executor.execute_steps(steps)
    assert results[0]["success"] is False
    (detail, target, result), = query(dsn, "SELECT error_detail, target_file, execution_result "
                                           "FROM jr_step_rewards WHERE task_id = 108")
    assert result == "failed" and len(detail.encode()) <= 8192
    assert detail.startswith("it's %s; DROP TABLE jr_step_rewards; -- \\x00 xxx")
    assert target == "we'ird %(x)s \\x00.txt"

    raising = [{"type": "raise", "message": "m" * (1024 * 1024)}]
    with pytest.raises(RuntimeError) as caught:
        make_executor(TaskExecutor, tmp_path, 109).execute_steps(raising)
    assert len(str(caught.value)) == 1024 * 1024  # the host's exception, unchanged
    assert results_by_step(dsn, 109) == {0: "error"}


def test_a_non_integer_task_id_runs_unchecked(installed, dsn, tmp_path, caplog):
    TaskExecutor, _ = installed
    executor = make_executor(TaskExecutor, tmp_path, "task-7")
    assert executor.execute_steps([{"type": "write", "path": "f", "content": "1"}]) == [
        {"success": True, "path": str(tmp_path / "f")}]
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards") == [(0,)]
    assert any("'task-7' is not an integer" in m for m in caplog.messages)


def test_threads_with_their_own_executors_share_one_store(installed, dsn, tmp_path):
    TaskExecutor, _ = installed
    failures = []

    def run(task_id):
        try:
            workdir = tmp_path / str(task_id)
            workdir.mkdir()
            steps = [{"type": "append", "path": "t.txt", "content": f"{task_id}:{i}\n"} for i in range(15)]
            make_executor(TaskExecutor, workdir, task_id).execute_steps(steps)
        except Exception as exc:  # pragma: no cover - reported by the assertion
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(200 + i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    rows = query(dsn, "SELECT task_id, count(*), bool_and(execution_result = 'success') "
                      "FROM jr_step_rewards GROUP BY task_id ORDER BY task_id")
    assert rows == [(200 + i, 15, True) for i in range(6)]
