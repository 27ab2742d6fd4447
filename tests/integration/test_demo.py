"""``jr-checkpoint demo`` end to end: a real child process, a real SIGKILL, a real resume."""

from __future__ import annotations

import json
import re

import pytest

import jr_checkpoint
from jr_checkpoint import cli, demo, embedded
from jr_checkpoint.dsn import resolve
from jr_checkpoint.errors import CheckpointError
from tests.conftest import query

ROW = re.compile(r"^\s*(\d)\s+(\S+)\s+(\S*)\s+(.+?)\s{2,}(.+)$")


def step_table(out: str) -> dict[int, tuple[str, str, str, str]]:
    """The demo's step table: step -> (type, target, attempt 1, attempt 2)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step  type"))
    rows = {}
    for line in lines[start + 2:]:
        match = ROW.match(line)
        if not match:
            break
        rows[int(match[1])] = (match[2], match[3], match[4].strip(), match[5].strip())
    return rows


def final_config(out: str) -> str:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{demo.CONFIG} after attempt 2"))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        body.append(line[4:] + "\n")
    return "".join(body)


def test_demo_crashes_resumes_and_shows_both_attempts(dsn, capsys):
    assert cli.main(["demo", "--dsn", dsn]) == 0
    out = capsys.readouterr().out

    table = step_table(out)
    assert sorted(table) == [0, 1, 2, 3, 4, 5]
    for number in (0, 1, 2):
        assert table[number][2:] == ("ran", "skipped (checkpoint)")
    assert table[3][2:] == ("crashed (SIGKILL)", "ran")
    assert table[4][2:] == ("not reached", "ran")
    assert table[5][2:] == ("not reached", "ran")
    assert table[0][:2] == ("search_replace", "app/config.py")
    assert "resume point: step 3" in out
    assert "[CHECKPOINT] Step 2 already succeeded, skipping" in out
    assert "a plain retry, without checkpoints, stops at step 0: SEARCH text not found" in out
    assert final_config(out) == demo.FINAL_CONFIG
    assert not jr_checkpoint.installed()

    # The history stays: six successes of task -1; the task finished, so no checkpoint row.
    assert query(dsn, "SELECT task_id, count(*) FROM jr_step_rewards "
                      "WHERE execution_result = 'success' GROUP BY task_id") == [(-1, 6)]
    assert query(dsn, "SELECT count(*) FROM jr_task_checkpoints") == [(0,)]


def test_each_demo_takes_a_new_negative_task_id_and_keeps_the_old_history(dsn, capsys):
    query(dsn, "INSERT INTO jr_step_rewards (task_id, step_number, execution_result) "
               "VALUES (42, 0, 'success'), (-7, 0, 'success')")
    assert cli.main(["demo", "--dsn", dsn]) == 0
    assert cli.main(["demo", "--dsn", dsn]) == 0
    assert "task -9:" in capsys.readouterr().out
    assert query(dsn, "SELECT task_id, count(*) FROM jr_step_rewards GROUP BY task_id "
                      "ORDER BY task_id") == [(-9, 6), (-8, 6), (-7, 1), (42, 1)]


def test_demo_creates_the_tables_when_missing(empty_dsn, capsys):
    assert cli.main(["demo", "--dsn", empty_dsn]) == 0
    assert query(empty_dsn, "SELECT count(*) FROM jr_step_rewards") == [(6,)]


def test_demo_without_a_database_uses_the_embedded_server_and_keeps_its_data(no_host, scratch, capsys,
                                                                            monkeypatch):
    data_dir = scratch / "pgdata"
    monkeypatch.setattr(embedded, "default_data_dir", lambda: data_dir)
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert f"data kept in {data_dir}" in out
    assert "the ledger: jr-checkpoint status -1" in out
    assert final_config(out) == demo.FINAL_CONFIG
    assert embedded.has_data(data_dir)
    assert not (data_dir / "postmaster.pid").exists()  # stopped when the demo ended

    # With no database configured, status finds the demo's history on its embedded server.
    assert cli.main(["status", "-1"]) == 0
    out, err = capsys.readouterr()
    assert f"using the demo's embedded PostgreSQL in {data_dir}" in err
    assert out.startswith("task -1: finished; 6 step(s) recorded, 6 succeeded")
    assert not (data_dir / "postmaster.pid").exists()


def test_demo_data_dir_option(no_host, scratch, capsys):
    data_dir = scratch / "elsewhere"
    assert cli.main(["demo", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"data kept in {data_dir}" in out
    assert f"the ledger: jr-checkpoint status -1 --data-dir {data_dir}" in out
    with embedded.server(data_dir) as target:
        rows = query(embedded.database_uri(target, "postgres"),
                     "SELECT count(*) FROM jr_step_rewards WHERE task_id = -1")
    assert rows == [(6,)]
    # status and stats look there when told to
    assert cli.main(["status", "-1", "--data-dir", str(data_dir)]) == 0
    out, err = capsys.readouterr()
    assert f"using the demo's embedded PostgreSQL in {data_dir}" in err
    assert out.startswith("task -1: finished; 6 step(s) recorded, 6 succeeded")
    assert cli.main(["stats", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith("6 step(s) recorded (all time)")
    # and prune: the demo's task, whole (its six steps and both attempts)
    assert cli.main(["prune", "--older-than", "0s", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith("pruned 6 step row(s) and 2 attempt row(s)")
    assert cli.main(["reset", "-1", "--yes", "--data-dir", str(data_dir)]) == 1  # nothing left


def test_status_with_no_database_anywhere_says_what_to_do(no_host, scratch, capsys):
    assert cli.main(["status", "-1", "--data-dir", str(scratch / "none"), "--connect-timeout", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("jr-checkpoint: error: no database configured, and none running on this machine: "
                   "run `jr-checkpoint demo` first, or give --dsn\n")


def test_the_demo_leaves_two_attempts_in_the_ledger(dsn, capsys):
    """Through the writer (the lead's attempt rows): the demo, then `status -1 --json`."""
    assert cli.main(["demo", "--dsn", dsn]) == 0
    capsys.readouterr()
    assert cli.main(["status", "-1", "--json", "--dsn", dsn]) == 0
    task = json.loads(capsys.readouterr().out)
    assert task["state"] == "finished"
    summary = [(a["attempt"], a["outcome"], a["ran"], a["skipped"], a["failed"], a["resumed_at"])
               for a in task["attempts"]]
    assert summary == [(1, "died", [0, 1, 2], [], [], None), (2, "finished", [3, 4, 5], [0, 1, 2], [], 3)]
    assert [s["attempt"] for s in task["steps"]] == [1, 1, 1, 2, 2, 2]
    assert all(a["host"] and a["pid"] and a["started_at"] and a["ended_at"] for a in task["attempts"])


def test_a_child_that_dies_before_the_crash_point_is_reported(dsn, tmp_path):
    workspace = tmp_path / "empty"  # no app/config.py: step 0 fails, the child ends early
    workspace.mkdir()
    with pytest.raises(CheckpointError, match="did not reach step 3"):
        demo.crash_in_child(resolve(dsn), workspace, -1, timeout=20)
