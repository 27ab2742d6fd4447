"""A task's history: its steps, its attempts, and which attempt ran, skipped or failed each step.

The read side of the attempt ledger (``jr_task_attempts``). ``status`` and the dashboard's
task page show :func:`load_task`'s dict; the host's learning side reads :func:`trajectory`,
the same data in a shape that is kept stable across releases (docs/history.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import db
from . import dsn as dsn_module
from .schema import LOCK_NAMESPACE
from .sql import REPORTS

#: How an attempt can end (jr_task_attempts.outcome); 'running' while it has not.
OUTCOMES = ("running", "finished", "failed", "died", "lost", "exhausted", "unchecked")
#: A task's state: the dashboard's (sql/reports.sql, web_tasks), or unknown (attempt rows only).
STATES = ("running", "dead", "unfinished", "exhausted", "finished", "unknown")

#: A step row's columns -> the trajectory's names for them.
_STEP_KEYS = {"step_number": "step_number", "step_type": "step_type", "target_file": "target_file",
              "execution_result": "outcome", "execution_time_ms": "duration_ms",
              "step_content_hash": "content_hash", "error_detail": "error", "attempt": "attempt",
              "created_at": "created_at", "updated_at": "updated_at"}
_ATTEMPT_KEYS = ("attempt", "outcome", "stale", "ran", "skipped", "failed", "resumed_at", "host", "pid",
                 "started_at", "ended_at", "lease_until")


def read_task(cur: Any, task_id: int) -> dict[str, Any] | None:
    """Everything recorded for a task, on an open cursor; None when nothing is.

    ``{"task_id", "state", "checkpoint", "steps", "attempts"}``: the steps as their rows'
    columns plus ``attempt`` (what ``status --json`` prints and the dashboard serves).
    Two statements: the task's rows (task_history), then its state (web_tasks).
    """
    cur.execute(REPORTS["task_history"], {"task_id": task_id})
    checkpoint, steps, attempts = cur.fetchone()
    if checkpoint is None and not steps and not attempts:
        return None
    cur.execute(REPORTS["web_tasks"], {
        "namespace": LOCK_NAMESPACE, "state": None, "task_id": task_id, "limit": 1,
        "before_at": None, "before_task": None})
    row = cur.fetchone()
    state = row[1] if row is not None else "unknown"
    return {"task_id": task_id, "state": state, "checkpoint": checkpoint, "steps": steps or [],
            "attempts": [{key: a[key] for key in _ATTEMPT_KEYS} for a in attempts or []]}


def load_task(target: dsn_module.Target, task_id: int, *,
              connect_timeout: float | None = dsn_module.DEFAULT_CONNECT_TIMEOUT) -> dict[str, Any] | None:
    """:func:`read_task` on a connection of its own; database errors become the package's."""
    with db.cursor(target, connect_timeout) as cur:
        return read_task(cur, task_id)


def as_trajectory(task_id: int, task: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`read_task`'s dict in the stable shape (docs/history.md)."""
    if task is None:
        return {"task_id": task_id, "state": "unknown", "steps": [], "attempts": []}
    return {"task_id": task_id, "state": task["state"],
            "steps": [{new: step[old] for old, new in _STEP_KEYS.items()} for step in task["steps"]],
            "attempts": [dict(a) for a in task["attempts"]]}


def read_trajectory(cur: Any, task_id: int) -> dict[str, Any]:
    """:func:`trajectory` on an open cursor (the caller translates database errors)."""
    return as_trajectory(task_id, read_task(cur, task_id))


def load_trajectory(target: dsn_module.Target, task_id: int, *,
                    connect_timeout: float | None = dsn_module.DEFAULT_CONNECT_TIMEOUT) -> dict[str, Any]:
    """:func:`trajectory` on a resolved :class:`~jr_checkpoint.dsn.Target`."""
    return as_trajectory(task_id, load_task(target, task_id, connect_timeout=connect_timeout))


def trajectory(task_id: int, dsn: dsn_module.Dsn = None, *, target: dsn_module.Target | None = None,
               connect_timeout: float | None = dsn_module.DEFAULT_CONNECT_TIMEOUT) -> dict[str, Any]:
    """A task's steps in order and its attempts, for the learning side (a stable shape).

    ``dsn`` is resolved as everywhere in the package (argument, ``JR_CHECKPOINT_DSN``, the
    host's ``lib.secrets_loader``, ``PG*``); ``target`` is an already resolved one. A task
    with nothing recorded is ``{"state": "unknown", "steps": [], "attempts": []}``. Raises
    :class:`~jr_checkpoint.DatabaseUnavailable`, :class:`~jr_checkpoint.SchemaMissing` or
    :class:`~jr_checkpoint.StoreError`, never psycopg2's errors.
    """
    if dsn is not None and target is not None:
        raise TypeError("trajectory() takes dsn= or target=, not both")
    where = target if target is not None else dsn_module.resolve(dsn)
    return load_trajectory(where, task_id, connect_timeout=connect_timeout)


# -- which attempt did what --------------------------------------------------------------------

def stopped_at(attempt: dict[str, Any]) -> int | None:
    """The step an attempt that did not end by itself (died, lost, still running) stopped in:
    the one after the last it ran, skipped or failed (steps run in order). None when that is
    not known (its ``ran`` is), or the attempt ended by itself."""
    if attempt["outcome"] not in ("died", "lost", "running") or attempt["ran"] is None:
        return None
    seen: list[int] = [*attempt["ran"], *(attempt["skipped"] or []), *(attempt["failed"] or [])]
    if seen:
        return max(seen) + 1
    resumed: int | None = attempt["resumed_at"]
    return resumed if resumed is not None else 0


def shown_outcome(attempt: dict[str, Any]) -> str:
    """The outcome as shown: 'running' past its lease is 'dead'."""
    return "dead" if attempt["stale"] else attempt["outcome"]


def timeline(task: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per step: ``{"step", "cells"}``, a cell per attempt (in attempt order): 'ran',
    'failed', 'skipped', where an attempt stopped its outcome ('died', 'lost', 'running',
    'dead'), '' when it did not reach the step, '?' when the attempt did not say."""
    attempts = task["attempts"]
    numbers = {s["step_number"] for s in task["steps"]}
    for a in attempts:
        numbers.update(n for key in ("ran", "skipped", "failed") for n in a[key] or [])
        if stopped_at(a) is not None:  # a row for the step it stopped in, recorded or not
            numbers.add(stopped_at(a))
    rows = []
    for number in sorted(numbers):
        rows.append({"step": number, "cells": [_cell(a, number) for a in attempts]})
    return rows


def _cell(attempt: dict[str, Any], number: int) -> str:
    if attempt["ran"] is None and attempt["failed"] is None and attempt["skipped"] is None:
        return "?"
    for key, word in (("failed", "failed"), ("ran", "ran"), ("skipped", "skipped")):
        if number in (attempt[key] or []):
            return word
    return shown_outcome(attempt) if stopped_at(attempt) == number else ""


def ranges(numbers: Iterable[int] | None) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``; None (not known) -> ``"?"``; nothing -> ``""``."""
    if numbers is None:
        return "?"
    ordered = sorted(set(numbers))
    parts: list[str] = []
    start = previous = None
    for n in [*ordered, None]:
        if n is not None and previous is not None and n == previous + 1:
            previous = n
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = n
    return ", ".join(parts)


__all__ = ["OUTCOMES", "STATES", "as_trajectory", "load_task", "load_trajectory", "ranges", "read_task",
           "read_trajectory", "shown_outcome", "stopped_at", "timeline", "trajectory"]
