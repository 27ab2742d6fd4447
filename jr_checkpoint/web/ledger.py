"""What the dashboard reads: the queries of ``sql/reports.sql``, through :mod:`jr_checkpoint.db`.

The JSON endpoints return these dicts as they are, so they hold the same data as the
command line's ``--json``: a task is ``history.load_task`` (as ``status --json``),
the analytics start from ``reports.stats`` (as ``stats --json``).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from .. import db, history, reports
from ..dsn import DEFAULT_CONNECT_TIMEOUT, Target
from ..errors import ConfigurationError
from ..reports import rows as _rows
from ..schema import LOCK_NAMESPACE
from ..sql import REPORTS
from ..steps import is_task_id

STATES = ("running", "dead", "unfinished", "finished", "exhausted")
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "all": None}
OUTCOMES = ("success", "failed", "error")
BUCKETS = 24
PAGE_SIZE = 50


@dataclass(frozen=True)
class Cursor:
    """Where a page of tasks starts: tasks whose last activity comes before this one's."""

    at: datetime.datetime
    task_id: int

    def __str__(self) -> str:
        return f"{self.at.isoformat()}~{self.task_id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        at, sep, task = text.partition("~")
        try:
            if not sep or not is_task_id(int(task)):
                raise ValueError
            return cls(datetime.datetime.fromisoformat(at), int(task))
        except ValueError:
            raise ConfigurationError(f"bad 'before' cursor {text!r}: use the link of the page") from None


def _task_rows(cur: Any, *, state: str | None = None, task_id: int | None = None,
               before: Cursor | None = None, limit: int = PAGE_SIZE) -> list[dict[str, Any]]:
    return _rows(cur, "web_tasks", {
        "namespace": LOCK_NAMESPACE, "state": state, "task_id": task_id, "limit": limit,
        "before_at": before.at if before else None, "before_task": before.task_id if before else None,
    })


def tasks(target: Target, *, state: str | None = None, before: Cursor | None = None,
          limit: int = PAGE_SIZE, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> dict[str, Any]:
    """One page of tasks, newest activity first, and the cursor of the next page (or None)."""
    with db.cursor(target, connect_timeout) as cur:
        rows = _task_rows(cur, state=state, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    following = Cursor(rows[-1]["cursor_at"], rows[-1]["task_id"]) if more else None
    for row in rows:
        del row["cursor_at"]  # the paging key; last_activity is what a reader wants
    return {"state": state, "tasks": rows, "next": str(following) if following else None}


def task(target: Target, task_id: int, *,
         connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> dict[str, Any] | None:
    """``status --json``'s dict (its state, checkpoint, steps and attempts); None when nothing
    is recorded."""
    return history.load_task(target, task_id, connect_timeout=connect_timeout)


def analytics(target: Target, since: str, *, top: int = 10,
              connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> dict[str, Any]:
    """``stats --json``'s report over the window, plus attempts per task and outcomes over time."""
    seconds = WINDOWS[since]
    # The dashboard's own figures on a connection of their own, while stats runs.
    with reports.concurrently(target, connect_timeout, lambda cur: _over_time(cur, seconds)) as extra:
        report = reports.stats(target, seconds, limit=top, connect_timeout=connect_timeout)
    attempts, over_time = extra.result()
    return {**report, "since": since, "attempts": attempts, "outcomes": over_time}


def _over_time(cur: Any, seconds: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Attempts per task, and the outcomes over time."""
    attempts = _rows(cur, "web_attempts", {"seconds": seconds})
    cur.execute(REPORTS["web_window"], {"seconds": seconds})
    lo, hi = cur.fetchone()
    return attempts, outcomes(cur, lo, hi)


def outcomes(cur: Any, lo: datetime.datetime, hi: datetime.datetime) -> dict[str, Any]:
    """The steps from ``lo`` on by outcome, in BUCKETS slices of equal width up to ``hi`` (the
    last slice also holds any step after ``hi``)."""
    width = (hi - lo).total_seconds() / BUCKETS
    counts = _rows(cur, "web_outcomes", {"lo": lo, "width": width, "buckets": BUCKETS})
    slices = [{"start": str(lo + (hi - lo) * i / BUCKETS), **dict.fromkeys(OUTCOMES, 0)}
              for i in range(BUCKETS)]
    for row in counts:
        result = row["execution_result"]
        slices[row["bucket"]][result] = slices[row["bucket"]].get(result, 0) + row["steps"]
    return {"from": str(lo), "to": str(hi), "slices": slices}


__all__ = ["BUCKETS", "Cursor", "OUTCOMES", "PAGE_SIZE", "STATES", "WINDOWS", "analytics", "outcomes",
           "task", "tasks"]
