"""The step ledger: one step's row (``jr_checkpoint_record_step``), a task's records, and the
end of an attempt (its row in jr_task_attempts).

Every record checks the owner on the locked checkpoint row, so a worker that lost the task
writes nothing and is told (:class:`TaskOwnershipLost`). :class:`Ledger` is what a
:class:`~jr_checkpoint.task_run.TaskRun` needs from the store, as a Protocol: the store
implements it, and so does the tests' fake.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .db import Connector
from .errors import TaskOwnershipLost
from .shape import Shape
from .sql import QUERIES
from .steps import INT4_MAX, fits_int4

MAX_TEXT_BYTES = 8 * 1024
_TRUNCATED = "\n...[truncated by jr-checkpoint]"


def bound_text(value: Any, limit: int = MAX_TEXT_BYTES) -> str | None:
    """Text PostgreSQL can store: NUL bytes escaped, at most ``limit`` UTF-8 bytes."""
    if value is None:
        return None
    if type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value:
        return value  # the common case: nothing to escape, cut or replace
    text = str(value).replace("\x00", "\\x00")
    # "replace" also turns lone surrogates (os.fsdecode of a non-UTF-8 path) into "?".
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    keep = limit - len(_TRUNCATED.encode())
    return data[:keep].decode("utf-8", errors="ignore") + _TRUNCATED


@dataclass(frozen=True)
class StepRecord:
    step_number: int
    execution_result: str
    content_hash: str | None
    step_type: str | None = None
    target_file: str | None = None


@dataclass
class TaskState:
    """What the ledger knows about a task when an attempt begins, and whose attempt it is.

    ``attempt`` counts the attempts of the unfinished task (the checkpoint's, for
    ``max_attempts``); ``number`` is this attempt's row in jr_task_attempts (all its history).
    ``lease_until`` is this process's monotonic clock reading when the lease surely ends.
    """

    attempt: int
    checkpoint: dict[str, Any] | None
    steps: dict[int, StepRecord] = field(default_factory=dict)
    owner: str | None = None
    number: int | None = None
    lease_until: float = math.inf


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, for its row in jr_task_attempts: step numbers it ran, skipped, failed."""

    outcome: str
    resumed_at: int | None = None
    ran: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()

    def params(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "resumed_at": self.resumed_at, "ran": list(self.ran),
                "skipped": list(self.skipped), "failed": list(self.failed)}


@runtime_checkable
class Ledger(Protocol):
    """What one checkpointed call (:class:`~jr_checkpoint.task_run.TaskRun`) needs from the
    store: the lease's protocol, the step records, and how the store measures time."""

    lease: float

    @property
    def connect_timeout(self) -> float | None: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def target(self) -> Any: ...

    def begin_task(self, task_id: int, total_steps: int | None = None, *,
                   wait: float | None = 0.0) -> TaskState | None: ...

    def hold(self, task_id: int, owner: str, lease_until: float = math.inf) -> None: ...

    def lost(self, task_id: int, owner: str) -> bool: ...

    def lease_until(self, task_id: int, owner: str) -> float: ...

    def forget_lease(self, task_id: int, owner: str) -> None: ...

    def record_step(self, task_id: int, step_number: int, *, owner: str, execution_result: str,
                    **record: Any) -> None: ...

    def release_task(self, task_id: int, owner: str, *, completed: bool, exhausted: bool = False,
                     end: AttemptEnd | None = None, patient: bool = True) -> str: ...

    def note_unchecked(self, task_id: int, ran: tuple[int, ...], failed: tuple[int, ...]) -> None: ...


class StepLedger:
    """The statements of the step ledger, on a :class:`~jr_checkpoint.db.Connector`."""

    def __init__(self, connector: Connector, lease: float):
        self.db = connector
        self.lease = lease

    def record_step(
        self,
        task_id: int,
        step_number: int,
        *,
        owner: str,
        execution_result: str,
        shape: Shape,
        v1: bool = False,
        step_type: Any = "unknown",
        target_file: Any = "",
        content_hash: str | None = None,
        execution_time_ms: int | None = None,
        error_detail: Any = None,
        last_completed_step: int = -1,
        total_steps: int | None = None,
        end: AttemptEnd | None = None,
        patient: bool = True,
    ) -> None:
        """Record one step's outcome and move the checkpoint, in one statement, as ``owner``;
        with ``end`` (this release's functions, ``not v1``), the same statement then ends the
        attempt and releases the completed task. ``shape``: the live tables', to fit the values.

        Raises :class:`TaskOwnershipLost` (and writes nothing) when ``owner`` lost the task.
        """
        step_type, target_file, error_detail = shape.fit_step(step_type, target_file, error_detail)
        if execution_time_ms is not None:
            execution_time_ms = max(0, min(int(execution_time_ms), INT4_MAX))
        if not v1 and (fits_int4(task_id) and fits_int4(step_number) and fits_int4(last_completed_step)
                       and (total_steps is None or fits_int4(total_steps))):
            # The common case: bound in order, no casts (record_step_checked).
            params: tuple[Any, ...] = (
                task_id, owner, step_number, bound_text(step_type), bound_text(target_file),
                content_hash, execution_result, execution_time_ms, bound_text(error_detail),
                last_completed_step, total_steps, self.lease)
            if end is not None:
                params += (end.outcome, end.resumed_at, list(end.ran), list(end.skipped), list(end.failed))
            (recorded,) = self.db.run("record_step", params, patient=patient,  # named so in errors
                                      sql=_CHECKED if end is None else _CHECKED_END)
        else:  # let the server refuse it, in its own words (the casts of record_step)
            name = "record_step_v1" if v1 else "record_step" if end is None else "finish_step"
            (recorded,) = self.db.run(name, {
                "task_id": task_id, "owner": owner, "step_number": step_number,
                "step_type": bound_text(step_type),
                "target_file": bound_text(target_file), "content_hash": content_hash,
                "execution_result": execution_result, "execution_time_ms": execution_time_ms,
                "error_detail": bound_text(error_detail), "last_completed_step": last_completed_step,
                "total_steps": total_steps, "lease": self.lease,
                **_end_params(end)}, patient=patient)
        if not recorded:
            raise TaskOwnershipLost(f"task {task_id}: another worker took it over; stopping")

    def load_task(self, task_id: int) -> dict[str, Any] | None:
        """Everything recorded for a task, in one query; None when nothing is."""
        checkpoint, steps = self.db.run("load_task", {"task_id": task_id})
        if checkpoint is None and not steps:
            return None
        return {"task_id": task_id, "checkpoint": checkpoint, "steps": steps or []}

    def forget_task(self, task_id: int) -> tuple[int, int]:
        """Delete a task's step rows and checkpoint so it runs again from scratch.

        Returns how many step rows and checkpoint rows went.
        """
        steps, checkpoints = self.db.run("forget_task", {"task_id": task_id})
        return int(steps), int(checkpoints)

    def note_unchecked(self, task_id: int, holder: str, ran: tuple[int, ...],
                       failed: tuple[int, ...]) -> None:
        """An attempt row for a call that ran without the lease (``holder``: its JSON)."""
        self.db.run("note_unchecked", {"task_id": task_id, "holder": holder,
                                       "ran": list(ran), "failed": list(failed)})


_CHECKED, _CHECKED_END = QUERIES["record_step_checked"], QUERIES["record_step_checked_end"]


def _end_params(end: AttemptEnd | None) -> dict[str, Any]:
    if end is None:
        return {"end_outcome": None, "resumed_at": None, "ran": None, "skipped": None, "failed": None}
    return {"end_outcome": end.outcome, **{k: v for k, v in end.params().items() if k != "outcome"}}


__all__ = ["MAX_TEXT_BYTES", "AttemptEnd", "Ledger", "StepLedger", "StepRecord", "TaskState", "bound_text"]
