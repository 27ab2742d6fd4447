"""The host's worker, untouched, under `jr-checkpoint run`: killed mid-task and run again, and a
task the queue's reaper hands to a second worker while the first still runs it.

The worker is the stand-in's jr_queue_worker.py, started as the host starts it (from inside
jr_executor/, `python -u jr_queue_worker.py NAME`), with JR_WORKER_DRAIN=1 so that it exits
when the queue is empty. Its database is the host's (CHEROKEE_DB_*): jr-checkpoint finds it
through the host's lib.secrets_loader, with nothing configured for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HOST_ROOT, host_env, query
from tests.waiting import wait_until

JR = "Jr Test"
CRASH_ONCE = "if [ ! -f crashed.flag ]; then touch crashed.flag; kill -KILL $PPID; sleep 5; fi"
GATE = "echo start >> gate.log; while [ ! -f go ]; do sleep 0.01; done; echo end >> gate.log"


def instruction(bash):
    return f"""# Jr Instruction: config

File: `app/settings.txt`

```text
<<<<<<< SEARCH
mode = draft
=======
mode = final
>>>>>>> REPLACE
```

Create `app/notes.txt`:

```text
written once
```

```bash
{bash}
```

```bash
echo done >> journal.txt
```
"""


@pytest.fixture
def queue(host_db, tmp_path):
    """The host's queue table, and a function that adds a task to it and returns its id."""
    query(host_db, (HOST_ROOT / "jr_executor" / "queue_tasks.sql").read_text())
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "settings.txt").write_text("mode = draft\n")

    def add(content):
        ((task_id,),) = query(host_db, "INSERT INTO jr_work_queue (task_id, title, instruction_content, "
                                       "assigned_jr) VALUES ('T-1', 'config', %s, %s) RETURNING id",
                              (content, JR))
        return task_id
    return add


def worker(dsn, root, **popen):
    env = {**os.environ, **host_env(dsn, root), "JR_WORKER_DRAIN": "1", "JR_WORKER_POLL": "0.05"}
    command = [sys.executable, "-m", "jr_checkpoint", "run", "--",
               sys.executable, "-u", "jr_queue_worker.py", JR]
    return subprocess.Popen(command, cwd=HOST_ROOT / "jr_executor", env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def status(dsn, task_id):
    return query(dsn, "SELECT status FROM jr_work_queue WHERE id = %s", (task_id,))[0][0]


def test_a_worker_killed_mid_task_resumes_where_it_stopped(host_db, queue, tmp_path):
    task_id = queue(instruction(CRASH_ONCE))
    first = worker(host_db, tmp_path)
    out, err = first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL, (out, err)  # the bash step killed the worker
    assert status(host_db, task_id) == "in_progress"
    rows = query(host_db, "SELECT step_number, execution_result FROM jr_step_rewards "
                          "WHERE task_id = %s ORDER BY 1", (task_id,))
    assert rows == [(0, "success"), (1, "success")]  # step 2 was in flight

    query(host_db, "UPDATE jr_work_queue SET status = 'pending' WHERE id = %s", (task_id,))  # the reaper
    second = worker(host_db, tmp_path)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, (out, err)
    # The dead worker's task is taken over at once (same host, its process is gone).
    assert "[CHECKPOINT] Step 0 already succeeded, skipping" in out
    assert "[CHECKPOINT] Step 1 already succeeded, skipping" in out
    assert status(host_db, task_id) == "completed"
    assert (tmp_path / "app" / "settings.txt").read_text() == "mode = final\n"
    assert (tmp_path / "app" / "notes.txt").read_text() == "written once\n"
    assert (tmp_path / "journal.txt").read_text() == "done\n"
    assert query(host_db, "SELECT count(*) FROM jr_task_checkpoints") == [(0,)]


def test_a_task_the_reaper_hands_to_a_second_worker_is_not_run_twice(host_db, queue, tmp_path):
    """reap_stale_tasks puts back a task whose worker still runs it: the second worker runs
    nothing (the host marks its attempt failed); the first finishes and completes the task."""
    task_id = queue(instruction(GATE))
    first = worker(host_db, tmp_path)
    wait_until((tmp_path / "gate.log").exists, 30, "the first worker's gated step", poll=0.01,
               alive=first)
    # Ten minutes later, as far as the reaper knows.
    query(host_db, "UPDATE jr_work_queue SET started_at = NOW() - INTERVAL '11 minutes' WHERE id = %s",
          (task_id,))
    env = {**os.environ, **host_env(host_db, tmp_path)}
    reap = ("import jr_queue_client; "
            f"print(jr_queue_client.JrQueueClient({JR!r}).reap_stale_tasks(10))")
    reaped = subprocess.run([sys.executable, "-c", reap], cwd=HOST_ROOT / "jr_executor", env=env,
                            capture_output=True, text=True, timeout=30)
    assert reaped.stdout.strip() == "1", reaped.stderr
    second = worker(host_db, tmp_path)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, (out, err)
    assert f"Task #{task_id} failed: Execution error: task {task_id} is being run by another worker" in out
    assert not (tmp_path / "journal.txt").exists()  # the second worker ran nothing
    (tmp_path / "go").touch()
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, (out, err)
    assert status(host_db, task_id) == "completed"
    assert (tmp_path / "gate.log").read_text() == "start\nend\n"
    assert (tmp_path / "journal.txt").read_text() == "done\n"


def test_a_worker_told_to_wait_finds_the_steps_done(host_db, queue, tmp_path):
    """With `--wait`, the second worker waits for the owner, then runs nothing and completes."""
    task_id = queue(instruction(GATE))
    first = worker(host_db, tmp_path)
    wait_until((tmp_path / "gate.log").exists, 30, "the first worker's gated step", poll=0.01,
               alive=first)
    query(host_db, "UPDATE jr_work_queue SET status = 'pending' WHERE id = %s", (task_id,))
    env = {**os.environ, **host_env(host_db, tmp_path), "JR_WORKER_DRAIN": "1",
           "JR_WORKER_POLL": "0.05"}
    second = subprocess.Popen([sys.executable, "-m", "jr_checkpoint", "run", "--wait", "60", "--",
                               sys.executable, "-u", "jr_queue_worker.py", JR],
                              cwd=HOST_ROOT / "jr_executor", env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    names = [f"jr-checkpoint pid {second.pid}"]
    wait_until(lambda: query(host_db, "SELECT 1 FROM pg_stat_activity WHERE application_name = ANY(%s)",
                             (names,)),
               30, "the waiting worker's session", poll=0.01, alive=second)
    (tmp_path / "go").touch()
    assert first.wait(60) == 0
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, (out, err)
    assert "[CHECKPOINT] Step 3 already succeeded, skipping" in out
    assert status(host_db, task_id) == "completed"
    assert (tmp_path / "gate.log").read_text() == "start\nend\n"
    assert (tmp_path / "journal.txt").read_text() == "done\n"
    assert Path(tmp_path / "app" / "notes.txt").read_text() == "written once\n"
