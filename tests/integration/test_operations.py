"""The alert queries of docs/operations.md, read from it and run on a real ledger.

Tasks in each state are made through the store, as workers make them; only their age is
set by hand (updated_at moved back two days).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import query

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
OLD = "UPDATE jr_task_checkpoints SET updated_at = now() - interval '2 days' WHERE task_id = %s"


def documented_alert(name: str) -> str:
    match = re.search(rf"<!-- alert: {re.escape(name)} -->\n```sql\n(.*?)```",
                      OPERATIONS.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert match, f"no '{name}' alert in {OPERATIONS}"
    return match[1]


def one_step(store, task_id: int, *, release: bool = True, exhausted: bool = False,
             completed: bool = False) -> None:
    state = store.begin_task(task_id, 2)
    store.record_step(task_id, 0, owner=state.owner, execution_result="success", step_type="file",
                      last_completed_step=0, total_steps=2)
    if release:
        store.release_task(task_id, state.owner, completed=completed, exhausted=exhausted)


def test_the_alert_queries_find_exhausted_and_abandoned_tasks(store, dsn):
    one_step(store, 1, exhausted=True)        # exhausted (old)
    one_step(store, 2)                        # unfinished, old, no lease: abandoned
    one_step(store, 3)                        # unfinished, recent: being retried
    one_step(store, 4, release=False)         # running (a live lease), old
    one_step(store, 5, completed=True)        # finished: no checkpoint row
    for task_id in (1, 2, 4):
        query(dsn, OLD, (task_id,))
    assert [row[:2] for row in query(dsn, documented_alert("exhausted"))] == [(1, "1")]
    assert [row[:3] for row in query(dsn, documented_alert("stuck"))] == [(2, 0, 2)]


def test_the_attempts_alert_counts_died_and_lost_attempts_per_host(dsn):
    """Rows as the lease protocol leaves them (inserted directly: the query is under test)."""
    query(dsn, "INSERT INTO jr_task_attempts (task_id, attempt, host, outcome, ended_at) VALUES "
               "(1, 1, 'redfin', 'died', now()), (1, 2, 'redfin', 'finished', now()), "
               "(2, 1, 'redfin', 'died', now()), (3, 1, 'bluefin', 'lost', now()), "
               "(4, 1, 'bluefin', 'died', now() - interval '3 days'), (5, 1, 'bluefin', 'running', NULL)")
    assert [row[:3] for row in query(dsn, documented_alert("attempts"))] == [
        ("redfin", "died", 2), ("bluefin", "lost", 1)]
