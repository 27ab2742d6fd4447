"""The host's ``on_task_finished`` callback: a finished call's trajectory, handed over once,
after its attempt is written, outside any step. A raising callback is logged once and
contained: the host's learning side must not break its run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .log import emit
from .text import describe_error, safe_text

if TYPE_CHECKING:
    from .options import FinishedHook
    from .task_run import TaskRun

logger = logging.getLogger(__name__)

#: The outcomes the hook hears of: a call that lost the task leaves it to the worker that
#: took it over, and one that ran unchecked has no reliable history.
REPORTED = ("finished", "failed", "exhausted")

#: Callbacks (by id) that raised once already: logged once each, then contained.
_failures: set[int] = set()


def task_finished(run: TaskRun, callback: FinishedHook | None) -> None:
    """Hand ``run``'s task trajectory to ``callback(trajectory, outcome)``; never raises."""
    if callback is None or run.outcome not in REPORTED:
        return
    from .history import load_trajectory  # the read side: only when a hook wants it

    task_id = run.task_id
    try:
        trajectory = load_trajectory(run.store.target, task_id, connect_timeout=run.store.connect_timeout)
    except Exception as exc:
        emit(logger, logging.WARNING, "[CHECKPOINT] task %s: its trajectory could not be read for "
             "on_task_finished: %s", task_id, safe_text(exc), action="trajectory_failed", task_id=task_id)
        return
    try:
        callback(trajectory, run.outcome)
    except Exception as exc:
        if id(callback) not in _failures:
            _failures.add(id(callback))
            emit(logger, logging.WARNING, "[CHECKPOINT] on_task_finished failed (%s); later failures "
                 "of it are not logged", describe_error(exc), action="hook_failed", task_id=task_id)


__all__ = ["REPORTED", "task_finished"]
