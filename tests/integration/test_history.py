"""A task's history, read side: status (JSON and text), trajectory(), the dashboard's task page and
list, and prune, on attempt rows written straight into a real PostgreSQL (tests/attempt_story.py)."""

from __future__ import annotations

import json

import pytest

import jr_checkpoint
from jr_checkpoint import cli, db, history, reports
from jr_checkpoint.dsn import resolve
from tests.attempt_story import DEAD_TASK, DEMO_TASK, MIXED_TASK, insert_story
from tests.conftest import query
from tests.web_ledger import populate

DEMO_SUMMARY = [(1, "died", [0, 1, 2], [], [], None), (2, "finished", [3, 4, 5], [0, 1, 2], [], 3)]


@pytest.fixture
def story(dsn):
    insert_story(dsn)
    populate(dsn)  # tasks 10-18, written before the attempt ledger: no attempt rows
    return dsn


def status(dsn, capsys, *argv):
    assert cli.main(["status", *argv, "--dsn", dsn]) == 0
    return capsys.readouterr().out


def summary(attempts):
    return [(a["attempt"], a["outcome"], a["ran"], a["skipped"], a["failed"], a["resumed_at"])
            for a in attempts]


def test_status_json_shows_the_demos_two_attempts(story, capsys):
    task = json.loads(status(story, capsys, str(DEMO_TASK), "--json"))
    assert task["state"] == "finished" and task["checkpoint"] is None
    assert summary(task["attempts"]) == DEMO_SUMMARY
    first, second = task["attempts"]
    assert (first["host"], first["pid"], first["stale"]) == ("demo-host", 4101, False)
    assert first["started_at"] < first["ended_at"] <= second["started_at"] < second["ended_at"]
    assert "T" in first["started_at"]  # ISO-8601, not an epoch number
    assert [s["step_number"] for s in task["steps"]] == [0, 1, 2, 3, 4, 5]
    assert [s["attempt"] for s in task["steps"]] == [1, 1, 1, 2, 2, 2]


def test_status_text_shows_an_attempts_table_and_where_attempt_1_died(story, capsys):
    lines = status(story, capsys, str(DEMO_TASK)).splitlines()
    assert lines[0] == "task -1: finished; 6 step(s) recorded, 6 succeeded; " \
                       "no checkpoint row (removed when it finished); 2 attempt(s)"
    header = lines.index(next(line for line in lines if line.startswith("attempt")))
    assert lines[header].split() == ["attempt", "outcome", "ran", "skipped", "failed", "resumed", "at",
                                     "host/pid", "started", "ended"]
    one, two = lines[header + 2].split(), lines[header + 3].split()
    assert one[:3] == ["1", "died", "0-2"] and one[3] == "demo-host/4101"
    assert two[:5] == ["2", "finished", "3-5", "0-2", "3"] and two[5] == "demo-host/4100"
    assert "attempt 1 died in step 3" in lines
    steps = lines.index(next(line for line in lines if line.startswith("step  type")))
    assert lines[steps].split() == ["step", "type", "target", "result", "ms", "attempt", "when"]
    assert [lines[steps + 2 + n].split()[5] for n in range(6)] == ["1", "1", "1", "2", "2", "2"]


def test_old_ledger_rows_show_attempt_unknown(story, capsys):
    task = json.loads(status(story, capsys, "10", "--json"))
    assert task["attempts"] == [] and [s["attempt"] for s in task["steps"]] == [None, None, None]
    text = status(story, capsys, "10")
    assert "no attempt recorded: attempt unknown for every step" in text
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("0 ", "1 ", "2 "))]
    assert [row[5] for row in rows] == ["unknown"] * 3
    # a task with attempts, and one row written outside them (the host's own helper)
    mixed = json.loads(status(story, capsys, str(MIXED_TASK), "--json"))
    assert [s["attempt"] for s in mixed["steps"]] == [None, 1]
    assert "attempt unknown: the row was written outside every recorded attempt" in \
        status(story, capsys, str(MIXED_TASK))


def test_a_holder_that_died_shows_dead_not_running(story, capsys):
    task = json.loads(status(story, capsys, str(DEAD_TASK), "--json"))
    assert task["state"] == "dead"
    (attempt,) = task["attempts"]
    assert (attempt["outcome"], attempt["stale"], attempt["ended_at"]) == ("running", True, None)
    assert isinstance(attempt["lease_until"], str) and "T" in attempt["lease_until"]
    text = status(story, capsys, str(DEAD_TASK))
    assert "attempt 1 is still marked running, but its lease expired" in text
    assert "its holder is gone (dead), in step 1" in text


def test_trajectory_is_the_stable_shape(story):
    shape = jr_checkpoint.trajectory(DEMO_TASK, story)
    assert "trajectory" in jr_checkpoint.__all__
    assert list(shape) == ["task_id", "state", "steps", "attempts"]
    assert (shape["task_id"], shape["state"]) == (DEMO_TASK, "finished")
    assert summary(shape["attempts"]) == DEMO_SUMMARY
    step = shape["steps"][3]
    assert list(step) == ["step_number", "step_type", "target_file", "outcome", "duration_ms",
                          "content_hash", "error", "attempt", "created_at", "updated_at"]
    assert (step["step_number"], step["step_type"], step["target_file"], step["outcome"],
            step["duration_ms"], step["attempt"], step["error"]) == \
        (3, "search_replace", "app/config.py", "success", 6, 2, None)
    assert len(step["content_hash"]) == 32 and isinstance(step["updated_at"], str)
    assert set(shape["attempts"][0]) >= {"attempt", "outcome", "ran", "skipped", "failed", "resumed_at",
                                         "host", "pid", "started_at", "ended_at", "stale"}
    # the same through a resolved target, and on an open cursor
    assert jr_checkpoint.trajectory(DEMO_TASK, target=resolve(story)) == shape
    assert history.load_trajectory(resolve(story), DEMO_TASK) == shape
    with db.cursor(resolve(story)) as cur:
        assert history.read_trajectory(cur, DEMO_TASK) == shape
    assert jr_checkpoint.trajectory(404, story) == {"task_id": 404, "state": "unknown", "steps": [],
                                                    "attempts": []}
    assert jr_checkpoint.trajectory(DEAD_TASK, story)["state"] == "dead"
    with pytest.raises(TypeError, match="dsn= or target="):
        jr_checkpoint.trajectory(1, story, target=resolve(story))


def test_trajectory_of_an_unreachable_database_is_the_packages_error():
    with pytest.raises(jr_checkpoint.DatabaseUnavailable):
        jr_checkpoint.trajectory(1, "host=127.0.0.1 port=1 dbname=x", connect_timeout=1)


def test_timeline_says_which_attempt_ran_skipped_or_died_in_each_step(story):
    task = history.load_task(resolve(story), DEMO_TASK)
    assert [(row["step"], row["cells"]) for row in history.timeline(task)] == [
        (0, ["ran", "skipped"]), (1, ["ran", "skipped"]), (2, ["ran", "skipped"]),
        (3, ["died", "ran"]), (4, ["", "ran"]), (5, ["", "ran"])]
    dead = history.load_task(resolve(story), DEAD_TASK)
    assert [(row["step"], row["cells"]) for row in history.timeline(dead)] == [(0, ["ran"]), (1, ["dead"])]
    assert history.ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert history.ranges([]) == "" and history.ranges(None) == "?"


def test_prune_removes_the_attempt_rows_with_the_step_rows(story):
    query(story, "UPDATE jr_step_rewards SET created_at = created_at - interval '3 days', "
                 "updated_at = updated_at - interval '3 days' WHERE task_id = %s", (DEMO_TASK,))
    query(story, "UPDATE jr_task_attempts SET started_at = started_at - interval '3 days', "
                 "ended_at = ended_at - interval '3 days' WHERE task_id = %s", (DEMO_TASK,))
    # a call that took a task and ended before its first step: attempt rows only
    query(story, "INSERT INTO jr_task_attempts (task_id, attempt, started_at, ended_at, outcome) VALUES "
                 "(77, 1, LOCALTIMESTAMP - interval '3 days', LOCALTIMESTAMP - interval '3 days', 'failed')")
    before = query(story, "SELECT count(*) FROM jr_task_attempts WHERE task_id NOT IN (%s, 77)", (DEMO_TASK,))
    assert reports.prune(resolve(story), 86400, batch=2) == (6, 3)
    gone = "SELECT count(*) FROM jr_task_attempts WHERE task_id IN (%s, 77)"
    assert query(story, gone, (DEMO_TASK,)) == [(0,)]
    assert query(story, "SELECT count(*) FROM jr_task_attempts") == before  # recent tasks kept
    assert query(story, "SELECT count(*) FROM jr_step_rewards WHERE task_id = %s", (MIXED_TASK,)) == [(2,)]


# -- the dashboard -------------------------------------------------------------------------------

flask = pytest.importorskip("flask", reason="the dashboard needs the 'web' extra")  # in 'dev' too


@pytest.fixture
def client(story):
    from jr_checkpoint.web.serve import make_app

    return make_app(resolve(story)).test_client()


def test_the_task_page_json_is_status_json(story, client, capsys):
    printed = json.loads(status(story, capsys, str(DEMO_TASK), "--json"))
    served = client.get(f"/api/tasks/{DEMO_TASK}").get_json()
    assert served == printed
    assert summary(served["attempts"]) == DEMO_SUMMARY


def test_the_task_page_shows_the_attempts_as_a_timeline(client):
    html = client.get(f"/tasks/{DEMO_TASK}").get_data(as_text=True)
    assert '<tr data-attempt="1" data-outcome="died">' in html
    assert '<tr data-attempt="2" data-outcome="finished">' in html
    assert 'in step 3</span>' in html
    for step, first, second in ((0, "ran", "skipped"), (3, "died", "ran"), (5, "", "ran")):
        row = html.split(f'<tr data-step="{step}">', 1)[1].split("</tr>", 1)[0]
        assert f'data-attempt="1" data-cell="{first}"' in row
        assert f'data-attempt="2" data-cell="{second}"' in row
    old = client.get("/tasks/10").get_data(as_text=True)
    assert "none recorded: attempt unknown for every step" in old and 'id="attempts-timeline"' not in old
    assert old.count('<span class="muted">attempt unknown</span>') == 3


def test_the_task_list_counts_attempts_and_shows_dead_holders(client):
    tasks = {t["task_id"]: t for t in client.get("/api/tasks").get_json()["tasks"]}
    assert tasks[DEMO_TASK]["attempts"] == 2 and tasks[DEMO_TASK]["state"] == "finished"
    assert tasks[DEAD_TASK]["state"] == "dead" and tasks[DEAD_TASK]["attempts"] == 1
    assert tasks[11]["attempts"] == 1  # no attempt rows: the checkpoint row's counter
    assert tasks[17]["state"] == "dead"  # an owner whose lease expired, from an older ledger
    dead = client.get("/api/tasks?state=dead").get_json()["tasks"]
    assert [t["task_id"] for t in dead] == [17, DEAD_TASK]  # populate() came last
    html = client.get("/").get_data(as_text=True)
    assert f'<tr data-task="{DEAD_TASK}" data-state="dead">' in html


def test_the_dead_task_page_shows_its_lease_as_a_time(client):
    html = client.get(f"/tasks/{DEAD_TASK}").get_data(as_text=True)
    assert 'id="task-state">dead<' in html and "still marked running; lease expired 20" in html
    assert "(this server&#39;s local time)" in html  # checkpoint_data's lease_until, not a float
    assert 'http-equiv="refresh"' not in html


def test_error_pages_name_no_host_port_or_database(story):
    from jr_checkpoint.web.serve import make_app

    down = make_app(resolve("host=127.0.0.1 port=1 dbname=secretdb"), connect_timeout=1).test_client()
    for url in ("/", "/api/tasks", "/tasks/1", "/api/analytics"):
        response = down.get(url)
        assert response.status_code == 503, url
        text = response.get_data(as_text=True)
        assert "cannot reach the ledger" in text and "secretdb" not in text and "127.0.0.1" not in text
        assert "port=1" not in text and "port 1" not in text and '"1"' not in text
    up = make_app(resolve(story)).test_client()
    for url in ("/tasks/404", "/api/tasks/404"):
        response = up.get(url)
        text = response.get_data(as_text=True)
        assert response.status_code == 404 and "task 404: nothing recorded" in text
        dbname = resolve(story).params["dbname"]
        port = str(resolve(story).params.get("port", "5432"))
        assert dbname not in text and f"port={port}" not in text and f"port {port}" not in text
