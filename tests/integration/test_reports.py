"""status, stats, reset and prune on a real PostgreSQL, with rows the decorator really wrote."""

from __future__ import annotations

import json

import pytest

from jr_checkpoint import CheckpointStore, checkpointed_steps, cli, reports
from jr_checkpoint.dsn import resolve
from tests.conftest import query, record_row


@pytest.fixture
def executor(store, tmp_path):
    """The host stand-in's TaskExecutor, checkpointed on the test's database."""
    from tests.fakes import FileExecutor as TaskExecutor

    class Checkpointed(TaskExecutor):
        execute_steps = checkpointed_steps(store=store)(TaskExecutor.execute_steps)

    def make(task_id):
        instance = Checkpointed(tmp_path)
        instance._current_task_id = task_id
        return instance

    return make


def record(store, task_id, number, result="success", step_type="write", ms=1, target="a.txt",
           error=None):
    record_row(store, task_id, number, execution_result=result, step_type=step_type,
               target_file=target, execution_time_ms=ms, error_detail=error,
               last_completed_step=number if result == "success" else number - 1)


def age(dsn, task_id, days, column="updated_at"):
    """The task's step rows, and its attempts, as if written ``days`` ago."""
    query(dsn, f"UPDATE jr_step_rewards SET created_at = created_at - make_interval(days => %s), "
               f"{column} = {column} - make_interval(days => %s) WHERE task_id = %s",
          (days, days, task_id))
    query(dsn, "UPDATE jr_task_attempts SET started_at = started_at - make_interval(days => %s), "
               "ended_at = ended_at - make_interval(days => %s) WHERE task_id = %s",
          (days, days, task_id))


def run(argv, dsn):
    return cli.main([*argv, "--dsn", dsn])


# -- status -----------------------------------------------------------------------------------

def test_status_of_an_unfinished_task_shows_its_steps_and_checkpoint(executor, dsn, capsys):
    steps = [{"type": "write", "path": "a.txt", "content": "a"},
             {"type": "fail", "error": "disk full\nsecond line"},
             {"type": "write", "path": "b.txt", "content": "b"}]
    executor(7).execute_steps(steps)
    assert run(["status", "7"], dsn) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("task 7: unfinished; 2 step(s) recorded, 1 succeeded; checkpoint: "
                               "attempt 1, resume at step 1 of 3 (last_completed_step=0)")
    header = next(i for i, line in enumerate(lines) if line.startswith("step  type"))
    assert lines[header].split() == ["step", "type", "target", "result", "ms", "attempt", "when"]
    assert lines[header + 2].split()[:4] == ["0", "write", "a.txt", "success"]
    assert lines[header + 3].split()[:3] == ["1", "fail", "failed"]
    assert "step 1 failed: disk full" in lines


def test_status_json_holds_every_recorded_column(executor, dsn, capsys):
    executor(8).execute_steps([{"type": "write", "path": "a.txt", "content": "a"}])
    assert run(["status", "8", "--json"], dsn) == 0
    task = json.loads(capsys.readouterr().out)
    assert task["task_id"] == 8
    assert task["checkpoint"] is None  # finished: the checkpoint row is gone
    (step,) = task["steps"]
    assert step["execution_result"] == "success"
    assert step["target_file"] == "a.txt"
    assert len(step["step_content_hash"]) == 64


def test_status_of_an_unknown_task_says_so_and_exits_1(dsn, capsys):
    assert run(["status", "404"], dsn) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("task 404: nothing recorded at ")


# -- stats ------------------------------------------------------------------------------------

def test_stats_per_type_with_percentiles_reruns_and_the_worst_steps(executor, store, dsn, capsys):
    for number, ms in enumerate((10, 20, 30, 40, 100)):
        record(store, 1, number, ms=ms)
    record(store, 2, 0, result="failed", step_type="shell", ms=5, target="", error="exit 1")
    record(store, 2, 0, result="success", step_type="shell", ms=7, target="")  # the re-run
    record(store, 3, 0, result="error", step_type="shell", ms=3, target="", error="Boom: no")
    executor(4).execute_steps([{"type": "write", "path": "c.txt", "content": "c"}])

    assert run(["stats", "--json"], dsn) == 0
    report = json.loads(capsys.readouterr().out)
    by_type = {row["step_type"]: row for row in report["by_type"]}
    write, shell = by_type["write"], by_type["shell"]
    assert (write["steps"], write["success_pct"], write["rerun"], write["failing"]) == (6, 100.0, 0, 0)
    assert write["p50_ms"] == pytest.approx(25.0)  # percentile_cont over 0(the real step), 10..100
    assert (shell["steps"], shell["rerun"], shell["failing"]) == (2, 1, 1)
    assert shell["success_pct"] == pytest.approx(50.0)
    assert report["total"]["steps"] == 8
    assert report["slowest"][0]["execution_time_ms"] == 100
    assert report["failing"][0]["step_type"] == "shell"
    assert (report["failing"][0]["failing"], report["failing"][0]["rerun"]) == (1, 1)
    assert report["failing"][0]["last_error"] == "Boom: no"


def test_stats_percentiles_are_postgresql_s(store, dsn):
    for number, ms in enumerate((10, 20, 30, 40, 100)):
        record(store, 1, number, ms=ms)
    (write,) = reports.stats(resolve(dsn))["by_type"]
    assert write["p50_ms"] == pytest.approx(30.0)
    assert write["p95_ms"] == pytest.approx(88.0)  # 40 + 0.8 * (100 - 40)


def test_stats_text_and_since_window(store, dsn, capsys):
    record(store, 1, 0, step_type="old", ms=1)
    record(store, 2, 0, step_type="recent", ms=2)
    age(dsn, 1, 3)
    assert run(["stats", "--since", "2d"], dsn) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 step(s) recorded (the last 2d)")
    assert "recent" in out and "old" not in out
    header = next(line for line in out.splitlines() if line.startswith("type"))
    assert header.split() == ["type", "steps", "success", "re-run", "failing", "p50", "ms", "p95", "ms"]
    assert run(["stats"], dsn) == 0
    assert capsys.readouterr().out.startswith("2 step(s) recorded (all time)")


def test_stats_of_an_empty_ledger(dsn, capsys):
    assert run(["stats"], dsn) == 0
    assert capsys.readouterr().out.strip() == "no steps recorded (all time)"


# -- reset ------------------------------------------------------------------------------------

def test_reset_forgets_a_task_so_it_runs_from_scratch(executor, dsn, capsys, tmp_path):
    steps = [{"type": "append", "path": "log.txt", "content": "x"}]
    (tmp_path / "log.txt").write_text("")
    executor(5).execute_steps(steps)
    executor(5).execute_steps(steps)  # skipped: still one x
    assert (tmp_path / "log.txt").read_text() == "x"
    assert run(["reset", "5", "--yes"], dsn) == 0
    assert "task 5: forgot 1 step row(s) and 0 checkpoint row(s)" in capsys.readouterr().out
    executor(5).execute_steps(steps)
    assert (tmp_path / "log.txt").read_text() == "xx"


def test_reset_refuses_without_a_terminal_and_asks_with_one(store, dsn, capsys, monkeypatch):
    record(store, 6, 0)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run(["reset", "6"], dsn) == 2
    assert "Refusing without --yes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert run(["reset", "6"], dsn) == 1
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE task_id = 6") == [(1,)]
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert run(["reset", "6"], dsn) == 0
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE task_id = 6") == [(0,)]


def test_reset_of_an_unknown_task_exits_1(dsn, capsys):
    assert run(["reset", "404", "--yes"], dsn) == 1
    assert "task 404: nothing recorded" in capsys.readouterr().err


def test_reset_refuses_a_task_another_worker_is_running(store, dsn, capsys):
    record(store, 9, 0)
    worker = CheckpointStore(dsn)
    assert worker.begin_task(9, wait=0) is not None
    try:
        assert run(["reset", "9", "--yes"], dsn) == 2
        assert "being run by another worker" in capsys.readouterr().err
        assert query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE task_id = 9") == [(1,)]
    finally:
        worker.close()


# -- prune ------------------------------------------------------------------------------------

def test_prune_deletes_whole_finished_tasks_older_than_the_cutoff_in_batches(store, dsn, capsys):
    for number in range(5):
        record(store, 1, number)  # finished long ago: pruned
    store.cleanup_checkpoints(1)
    record(store, 2, 0, result="failed")  # unfinished (has a checkpoint row): kept
    record(store, 3, 0)  # finished recently: kept
    store.cleanup_checkpoints(3)
    record(store, 4, 0)
    record(store, 4, 1)  # finished; one old step, one recent one: kept whole
    store.cleanup_checkpoints(4)
    for task_id in (1, 2):
        age(dsn, task_id, 10)
    query(dsn, "UPDATE jr_step_rewards SET updated_at = updated_at - interval '10 days' "
               "WHERE task_id = 4 AND step_number = 0")

    seen = []
    # (record_row takes the task for each row: one attempt a row)
    assert reports.prune(resolve(dsn), 7 * 86400, batch=2, progress=seen.append) == (5, 5)
    assert seen == [2, 4, 5]
    assert query(dsn, "SELECT task_id, count(*) FROM jr_step_rewards GROUP BY task_id "
                      "ORDER BY task_id") == [(2, 1), (3, 1), (4, 2)]


def test_prune_command_says_how_many_rows_went(store, dsn, capsys):
    record(store, 1, 0)
    record(store, 1, 1)
    store.cleanup_checkpoints(1)
    age(dsn, 1, 2)
    assert run(["prune", "--older-than", "3d"], dsn) == 0
    assert "pruned 0 step row(s) and 0 attempt row(s)" in capsys.readouterr().out
    assert run(["prune", "--older-than", "1d", "--batch", "1"], dsn) == 0
    assert capsys.readouterr().out.startswith("pruned 2 step row(s) and 2 attempt row(s) of finished "
                                              "tasks untouched for more than 1d")
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards") == [(0,)]


def test_output_into_a_closed_pipe_is_not_a_traceback(dsn):
    import subprocess
    import sys

    store = CheckpointStore(dsn)
    try:
        owner = store.begin_task(31).owner
        for number in range(1500):
            store.record_step(31, number, owner=owner, execution_result="success", target_file="f" * 40)
    finally:
        store.close()
    command = f"'{sys.executable}' -m jr_checkpoint status 31 --json --dsn '{dsn}' | head -c 20"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.stdout == '{\n  "task_id": 31,\n  '[:20]
    assert done.stderr == ""


def test_the_longest_duration_allowed_is_one_postgresql_accepts(store, dsn, capsys):
    record(store, 1, 0)
    store.cleanup_checkpoints(1)
    longest = f"{reports.MAX_DURATION_DAYS}d"
    assert run(["prune", "--older-than", longest], dsn) == 0
    assert run(["stats", "--since", longest], dsn) == 0
    assert "1 step(s) recorded" in capsys.readouterr().out
