"""Retry escalation on a real PostgreSQL: ``max_attempts`` and ``on_exhausted``.

The task's checkpoint counts attempts. A task still unfinished when it starts attempt
``max_attempts + 1`` runs no step: ``on_exhausted(task_id, checkpoint)`` is called, the lock
released, and ``TaskExhaustedError`` raised.
"""

from __future__ import annotations

import json

import psycopg2
import pytest

import jr_checkpoint
from jr_checkpoint import CheckpointStore, TaskExhaustedError
from tests.conftest import query
from tests.fakes import checkpointed_executor

FLAKY = [{"type": "write", "path": "a.txt", "content": "a"},
         {"type": "search_replace", "path": "config.txt", "search": "old", "replace": "new"}]


@pytest.fixture
def make_executor(tmp_path):
    """make_executor(task_id, **options): a file executor, checkpointed with options."""
    (tmp_path / "config.txt").write_text("nothing to replace yet\n")
    return lambda task_id, **options: checkpointed_executor(tmp_path, task_id, **options)


def test_the_attempt_after_the_last_escalates_instead_of_running(make_executor, store, dsn):
    calls = []
    options = {"store": store, "max_attempts": 3,
               "on_exhausted": lambda task_id, checkpoint: calls.append((task_id, checkpoint))}
    for attempt in (1, 2, 3):
        executor = make_executor(11, **options)
        results = executor.execute_steps(FLAKY)
        assert results[-1]["success"] is False, attempt
        assert [s["type"] for s in executor.executed] == (
            ["write", "search_replace"] if attempt == 1 else ["search_replace"])
    assert calls == []

    executor = make_executor(11, **options)
    with pytest.raises(TaskExhaustedError, match="task 11 is unfinished after 3 attempt"):
        executor.execute_steps(FLAKY)
    assert executor.executed == []  # no step ran
    ((task_id, checkpoint),) = calls
    assert task_id == 11
    assert checkpoint["checkpoint_data"]["attempts"] == 4
    assert checkpoint["last_completed_step"] == 0
    assert checkpoint["total_steps"] == 2

    other = CheckpointStore(dsn)  # the lock was released
    try:
        assert other.begin_task(11, wait=0) is not None
    finally:
        other.close()


def test_every_later_attempt_escalates_again(make_executor, store):
    calls = []
    options = {"store": store, "max_attempts": 1, "on_exhausted": lambda *args: calls.append(args)}
    make_executor(12, **options).execute_steps(FLAKY)
    for _ in range(2):
        with pytest.raises(TaskExhaustedError):
            make_executor(12, **options).execute_steps(FLAKY)
    assert [checkpoint["checkpoint_data"]["attempts"] for _, checkpoint in calls] == [2, 3]


def test_without_a_limit_a_task_is_retried_for_ever(make_executor, store):
    for _ in range(6):
        executor = make_executor(13, store=store)
        executor.execute_steps(FLAKY)
        assert [s["type"] for s in executor.executed][-1] == "search_replace"
    assert store.get_last_checkpoint(13)["checkpoint_data"]["attempts"] == 6


def test_a_task_that_finishes_starts_counting_again(make_executor, store, tmp_path):
    options = {"store": store, "max_attempts": 2}
    make_executor(14, **options).execute_steps(FLAKY)
    (tmp_path / "config.txt").write_text("old\n")
    results = make_executor(14, **options).execute_steps(FLAKY)  # attempt 2 finishes the task
    assert [r.get("skipped", False) for r in results] == [True, False]
    assert store.get_last_checkpoint(14) is None

    changed = [*FLAKY[:1], {"type": "fail", "error": "a new step"}]
    for _ in range(2):  # attempts 1 and 2 of the task's new life both run
        assert make_executor(14, **options).execute_steps(changed)[-1]["success"] is False
    with pytest.raises(TaskExhaustedError):
        make_executor(14, **options).execute_steps(changed)


def test_attempts_that_crashed_count_too(make_executor, store):
    for _ in range(2):  # two attempts that ended before recording anything
        state = store.begin_task(15, 2)
        store.release_task(15, state.owner, completed=False)
    executor = make_executor(15, store=store, max_attempts=2)
    with pytest.raises(TaskExhaustedError):
        executor.execute_steps(FLAKY)
    assert executor.executed == []


def test_a_failing_on_exhausted_is_still_exhausted_and_runs_no_step(make_executor, store, dsn):
    def broken(task_id, checkpoint):
        raise RuntimeError("dead-letter queue is down")

    make_executor(16, store=store, max_attempts=1).execute_steps(FLAKY)
    executor = make_executor(16, store=store, max_attempts=1, on_exhausted=broken)
    with pytest.raises(TaskExhaustedError, match="on_exhausted failed: dead-letter queue is down") as caught:
        executor.execute_steps(FLAKY)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert executor.executed == []
    other = CheckpointStore(dsn)
    try:
        assert other.begin_task(16, wait=0) is not None  # released all the same
    finally:
        other.close()


# -- the dead-letter example of docs/design.md, as written there --------------------------

DEAD_LETTERS = """
CREATE TABLE IF NOT EXISTS jr_dead_letters (
    task_id INTEGER PRIMARY KEY,
    checkpoint JSONB,
    at TIMESTAMP DEFAULT NOW()
)"""


def dead_letter(dsn):
    """docs/design.md's on_exhausted: one row per exhausted task, in the host's database."""

    def to_dead_letters(task_id, checkpoint):
        conn = psycopg2.connect(dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO jr_dead_letters (task_id, checkpoint) VALUES (%s, %s) "
                    "ON CONFLICT (task_id) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, at = NOW()",
                    (task_id, json.dumps(checkpoint, default=str)))
        finally:
            conn.close()

    return to_dead_letters


FLAKY_INSTRUCTION = """# Jr Instruction: config

Create `a.txt`:

```text
a
```

File: `config.txt`

```text
<<<<<<< SEARCH
old
=======
new
>>>>>>> REPLACE
```
"""


def test_exhausted_tasks_go_to_a_dead_letter_table_through_install(host_db, tmp_path):
    """The README's example on the host stand-in: install(), then the worker's own call."""
    dsn = host_db
    query(dsn, DEAD_LETTERS)
    (tmp_path / "config.txt").write_text("nothing to replace yet\n")
    jr_checkpoint.install(max_attempts=2, on_exhausted=dead_letter(dsn))
    try:
        from task_executor import TaskExecutor

        def attempt():
            task = {"id": 21, "task_id": "JR-21", "title": "config",
                    "instruction_content": FLAKY_INSTRUCTION}
            return TaskExecutor().process_queue_task(task)

        assert not attempt()["success"]
        assert not attempt()["success"]
        assert query(dsn, "SELECT count(*) FROM jr_dead_letters") == [(0,)]
        # The host turns the exception into its error result: no step runs, the worker fails it.
        for _ in range(2):
            third = attempt()
            assert not third["success"]
            assert "unfinished after 2 attempt(s)" in third["error"]
            assert third["steps_executed"] == []
    finally:
        jr_checkpoint.uninstall()
    ((task_id, checkpoint),) = query(dsn, "SELECT task_id, checkpoint FROM jr_dead_letters")
    assert task_id == 21
    assert checkpoint["checkpoint_data"]["attempts"] == 4
    # The ledger says so too (the dashboard shows the task as exhausted), until a reset.
    ((data,),) = query(dsn, "SELECT checkpoint_data FROM jr_task_checkpoints WHERE task_id = 21")
    assert data["exhausted"] is True and "owner" not in data
    assert checkpoint["last_completed_step"] == -1
