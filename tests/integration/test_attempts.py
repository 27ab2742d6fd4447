"""The attempt ledger as the writer leaves it, on a real PostgreSQL: how each attempt ends
(finished, failed, exhausted, lost, unchecked) and the ``on_task_finished`` hook.

The demo's SIGKILLed attempt closed ``died`` by its retry is in test_demo.py; the dashboard
and the CLI read these rows in test_history.py.
"""

from __future__ import annotations

import logging

import pytest

from jr_checkpoint import CheckpointStore, TaskExhaustedError, TaskOwnershipLost, checkpointed_steps, history
from tests.conftest import query
from tests.fakes import checkpointed_executor

STEPS = [{"type": "write", "path": "a.txt", "content": "a"},
         {"type": "search_replace", "path": "config.txt", "search": "old", "replace": "new"},
         {"type": "write", "path": "b.txt", "content": "b"}]


@pytest.fixture
def make_executor(tmp_path):
    """make_executor(task_id, **options): a file executor, checkpointed with options."""
    (tmp_path / "config.txt").write_text("nothing to replace yet\n")
    return lambda task_id, **options: checkpointed_executor(tmp_path, task_id, **options)


def attempts(dsn, task_id):
    return query(dsn, "SELECT attempt, outcome, ran, skipped, failed, resumed_at, ended_at IS NOT NULL "
                      "FROM jr_task_attempts WHERE task_id = %s ORDER BY attempt", (task_id,))


def test_a_failed_attempt_then_a_resumed_one(make_executor, store, dsn, tmp_path):
    executor = make_executor(1, store=store)
    assert [r["success"] for r in executor.execute_steps(STEPS)] == [True, False]
    (tmp_path / "config.txt").write_text("old\n")
    assert [r["success"] for r in make_executor(1, store=store).execute_steps(STEPS)] == [True] * 3
    assert attempts(dsn, 1) == [(1, "failed", [0, 1], [], [1], None, True),
                                (2, "finished", [1, 2], [0], [], 1, True)]


def test_an_exhausted_task_says_so(make_executor, store, dsn):
    for _ in range(2):
        make_executor(2, store=store, max_attempts=2).execute_steps(STEPS)
    with pytest.raises(TaskExhaustedError):
        make_executor(2, store=store, max_attempts=2).execute_steps(STEPS)
    assert [row[1] for row in attempts(dsn, 2)] == ["failed", "failed", "exhausted"]
    assert attempts(dsn, 2)[2][2:6] == ([], [], [], None)  # it ran nothing


def test_a_lease_taken_over_is_lost_and_the_taker_closed_it_as_died(dsn, tmp_path):
    from tests.fakes import FileExecutor

    slow, other = CheckpointStore(dsn, lease=0.3), CheckpointStore(dsn)
    taken = []

    class Executor(FileExecutor):
        def execute(self, step):
            result = super().execute(step)
            if step is STEPS[0]:  # inside the call: its lease runs out, another worker takes it
                slow.close()  # no more renewals from the keeper
                taken.append(other.begin_task(3, wait=None))
            return result

    Executor.execute_steps = checkpointed_steps(store=slow)(FileExecutor.execute_steps)
    (tmp_path / "config.txt").write_text("old\n")
    executor = Executor(tmp_path)
    executor._current_task_id = 3
    try:
        with pytest.raises(TaskOwnershipLost):
            executor.execute_steps(STEPS)
        rows = attempts(dsn, 3)
        assert [(row[0], row[1]) for row in rows] == [(1, "lost"), (2, "running")]
        assert rows[0][2] == [0]  # what the lost attempt ran, by its own account
        assert query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE task_id = 3") == [(0,)]
        other.release_task(3, taken[0].owner, completed=False)
        assert [row[1] for row in attempts(dsn, 3)] == ["lost", "failed"]
    finally:
        slow.close()
        other.close()


def test_a_call_that_began_with_the_server_down_is_noted_unchecked(dsn, pg_admin_dsn, tmp_path):
    # The call starts while its database refuses connections, and ends once it answers.
    store = CheckpointStore(dsn, outage=0)
    query(pg_admin_dsn, "ALTER DATABASE " + store.target.params["dbname"] + " ALLOW_CONNECTIONS false")
    reopened = []

    from tests.fakes import FileExecutor

    class Executor(FileExecutor):
        def execute(self, step):
            if not reopened:
                query(pg_admin_dsn, "ALTER DATABASE " + store.target.params["dbname"]
                      + " ALLOW_CONNECTIONS true")
                reopened.append(True)
            return super().execute(step)

    Executor.execute_steps = checkpointed_steps(store=store)(FileExecutor.execute_steps)
    (tmp_path / "config.txt").write_text("nothing to replace\n")
    executor = Executor(tmp_path)
    executor._current_task_id = 4
    try:
        assert [r["success"] for r in executor.execute_steps(STEPS)] == [True, False]
    finally:
        store.close()
    assert [row[1:5] for row in attempts(dsn, 4)] == [("unchecked", [0, 1], None, [1])]
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE task_id = 4") == [(0,)]


# -- on_task_finished ---------------------------------------------------------------------------


def test_the_hook_is_called_once_per_call_with_its_outcome_and_the_trajectory(make_executor, store,
                                                                               tmp_path):
    heard = []

    def hook(trajectory, outcome):
        heard.append((outcome, [a["outcome"] for a in trajectory["attempts"]],
                      [s["outcome"] for s in trajectory["steps"]]))

    make_executor(5, store=store, on_task_finished=hook, max_attempts=2).execute_steps(STEPS)
    (tmp_path / "config.txt").write_text("old\n")
    make_executor(5, store=store, on_task_finished=hook, max_attempts=2).execute_steps(STEPS)
    assert heard == [("failed", ["failed"], ["success", "failed"]),
                     ("finished", ["failed", "finished"], ["success", "success", "success"])]
    # the trajectory handed over is the public one
    assert history.trajectory(5, target=store.target)["attempts"][1]["outcome"] == "finished"


def test_the_hook_hears_of_an_exhausted_task(make_executor, store):
    heard = []
    make_executor(6, store=store, max_attempts=1).execute_steps(STEPS)  # fails
    executor = make_executor(6, store=store, max_attempts=1,
                             on_task_finished=lambda t, o: heard.append((o, len(t["attempts"]))))
    with pytest.raises(TaskExhaustedError):
        executor.execute_steps(STEPS)
    assert heard == [("exhausted", 2)]


def test_a_raising_hook_does_not_break_the_host_and_is_logged_once(make_executor, store, caplog, tmp_path):
    calls = []

    def hook(trajectory, outcome):
        calls.append(outcome)
        raise RuntimeError("the reward model is down")

    caplog.set_level(logging.WARNING, logger="jr_checkpoint")
    (tmp_path / "config.txt").write_text("old\n")
    for task_id in (7, 8):
        results = make_executor(task_id, store=store, on_task_finished=hook).execute_steps(STEPS)
        assert [r["success"] for r in results] == [True] * 3
        (tmp_path / "config.txt").write_text("old\n")
    assert calls == ["finished", "finished"]
    warnings = [r.getMessage() for r in caplog.records if "on_task_finished" in r.getMessage()]
    assert warnings == ["[CHECKPOINT] on_task_finished failed (RuntimeError: the reward model is down); "
                        "later failures of it are not logged"]


def test_install_takes_the_hook_and_checks_it_is_callable(dsn):
    import jr_checkpoint

    with pytest.raises(TypeError, match="on_task_finished must be callable"):
        jr_checkpoint.install(dsn, target="tests.fakes:FileExecutor.execute_steps", on_task_finished=3)
    assert not jr_checkpoint.installed()
