"""One checkpointed ``execute_steps`` call: take the task, skip or run and record each step,
give the task back.

:mod:`jr_checkpoint.decorator` creates a :class:`TaskRun` per call and sends it the host's
``execute`` calls; this module decides what happens to each step and talks to the store.
A step's path runs decorator → here → steps (what the step is) → store (its row).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import steps as step_rules
from .errors import DatabaseUnavailable, TaskExhaustedError, TaskLockedError, TaskOwnershipLost
from .log import emit
from .steps import ERROR, FAILED, SUCCESS, Row, SlotPlan, StepSequence
from .store import CheckpointStore, TaskState

if TYPE_CHECKING:
    from .decorator import Options

logger = logging.getLogger(__name__)


def safe_text(value: Any) -> str:
    """``str(value)``, or a description of it when even that fails (hostile objects)."""
    try:
        return str(value)
    except Exception:
        try:
            return f"<{type(value).__name__} that cannot be shown>"
        except Exception:
            return "<unprintable>"


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {safe_text(exc)}"


class TaskRun:
    """One decorated ``execute_steps`` call for one task."""

    #: While the ledger is unreachable, try to write what is pending at most this often.
    FLUSH_EVERY = 2.0

    def __init__(self, instance: Any, task_id: int, steps: StepSequence, store: CheckpointStore,
                 options: Options, passthrough: bool = False):
        self.instance = instance
        self.task_id = task_id
        self.steps = steps
        self.store = store
        self.options = options
        self.passthrough = passthrough
        self.in_step = False
        self.state = TaskState(attempt=1, checkpoint=None)
        self.plan = SlotPlan(task_id, {})
        self.digests: dict[int, str | None] = {}
        self.owner: str | None = None  # our lease on the task, while we hold it
        self.degraded = False  # the ledger failed: records wait in `pending` or are dropped
        self.pending: list[dict[str, Any]] = []  # records not yet written (the server is down)
        self.last_flush = 0.0
        self.succeeded: set[int] = set()  # positions known to have succeeded
        self.resume_at = 0  # the first position not known to have succeeded
        self.unchecked_warned = False

    def _log(self, level: int, message: str, *args: Any, action: str, **extra: Any) -> None:
        emit(logger, level, message, *args, action=action, task_id=self.task_id, **extra)

    # -- fail-open --------------------------------------------------------------------------

    def _degrade(self, exc: BaseException, doing: str) -> None:
        if not self.degraded:
            self._log(logging.WARNING, "[CHECKPOINT] task %s: %s failed, running the rest unchecked: %s",
                      self.task_id, doing, safe_text(exc), action="checkpoint_unavailable")
        self.degraded = True
        if not isinstance(exc, DatabaseUnavailable):
            self.pending.clear()  # not an outage: these records would fail again

    # -- start and end of the call ----------------------------------------------------------

    def begin(self) -> None:
        """Take the task and load its records; raises only TaskLocked/TaskExhausted."""
        try:
            state = self.store.begin_task(self.task_id, self.steps.total, wait=self.options.wait)
        except Exception as exc:  # never let the ledger break the host
            self._degrade(exc, "loading the checkpoint")
            return
        if state is None:
            raise TaskLockedError(f"task {self.task_id} is being run by another worker")
        self.state, self.owner = state, state.owner
        self.store.hold(self.task_id, self.owner)
        self.plan = SlotPlan(self.task_id, {
            number: Row(rec.execution_result, rec.content_hash, rec.step_type, rec.target_file)
            for number, rec in state.steps.items()
        })
        if self.steps.exhausted:  # a list: match every position before any takes a new row
            for position, step in enumerate(self.steps.items):
                self._match(position, step)
        self._advance_resume_point()
        self._check_attempts()

    def _match(self, position: int, step: Any) -> None:
        """Identify the step at ``position`` (once) and find its history in the plan."""
        try:
            digest = step_rules.digest(step)
        except Exception as exc:  # RecursionError, a str() that raises, ...: run it unchecked
            digest = None
            if not self.unchecked_warned:
                self.unchecked_warned = True
                self._log(logging.WARNING,
                          "[CHECKPOINT] task %s: step %s cannot be identified (%s); it runs unchecked",
                          self.task_id, position, describe_error(exc), action="step_unidentified")
        self.digests[position] = digest
        if digest is not None and self.plan.match(position, step, digest):
            if self.plan.succeeded(position):
                self.succeeded.add(position)

    def _check_attempts(self) -> None:
        limit = self.options.max_attempts
        if limit is None or self.state.attempt <= limit:
            return
        checkpoint = self.state.checkpoint
        self._log(logging.WARNING, "[CHECKPOINT] task %s starts attempt %s of at most %s: escalating",
                  self.task_id, self.state.attempt, limit, action="task_exhausted")
        message = f"task {self.task_id} is unfinished after {limit} attempt(s); not running it again"
        try:
            if self.options.on_exhausted is not None:
                self.options.on_exhausted(self.task_id, checkpoint)
        except Exception as exc:  # the escalation failed: still exhausted, with the cause attached
            raise TaskExhaustedError(f"{message} (on_exhausted failed: {safe_text(exc)})") from exc
        finally:
            self.finish(completed=False, exhausted=True)
        raise TaskExhaustedError(message)

    def _advance_resume_point(self) -> None:
        while self.resume_at in self.succeeded:
            self.resume_at += 1

    def all_succeeded(self) -> bool:
        """Every position a success: run or skipped in this call, or known by its identity."""
        if not self.steps.exhausted:
            return False
        return all(position in self.succeeded for position in range(len(self.steps.items)))

    def finish(self, completed: bool, exhausted: bool = False) -> None:
        """Write what is pending, give the task up; when every step succeeded, drop its checkpoint."""
        owner, self.owner = self.owner, None
        if owner is None:
            return
        self.store.forget_lease(self.task_id, owner)
        try:
            self._flush(owner, force=True)
        except TaskOwnershipLost:
            return  # another worker has it now: nothing of ours to release
        if self.pending:
            self._log(logging.WARNING, "[CHECKPOINT] task %s: %s step record(s) could not be written",
                      self.task_id, len(self.pending), action="records_lost")
        try:
            done = completed and not self.degraded
            if self.store.release_task(self.task_id, owner, completed=done, exhausted=exhausted,
                                       patient=not self.degraded):
                self._log(logging.INFO, "[CHECKPOINT] task %s complete, checkpoint cleaned up",
                          self.task_id, action="task_completed")
        except Exception as exc:  # the lease expires by itself
            self._degrade(exc, "releasing the task")

    # -- one step ---------------------------------------------------------------------------

    def run_step(self, execute: Callable, args: tuple, kwargs: dict) -> Any:
        step = args[0] if args else kwargs.get("step")
        position = self.steps.locate(step)
        if position is None:
            return execute(*args, **kwargs)
        if position not in self.digests:
            self._match(position, step)
        if position in self.succeeded:  # known from the ledger, even if it is unreachable now
            self._log(logging.INFO, "[CHECKPOINT] Step %s already succeeded, skipping", position,
                      action="step_skipped", step_number=position)
            return step_rules.skipped_result(step, position)
        if self.owner is not None and self.store.lost(self.task_id, self.owner):
            self.owner = None
            raise TaskOwnershipLost(f"task {self.task_id}: another worker took it over; stopping "
                                    f"before step {position}")
        clock = self.options.clock
        started = clock()
        self.in_step = True
        try:
            result = execute(*args, **kwargs)
        except BaseException as exc:
            elapsed = int((clock() - started) * 1000)
            try:
                self._record(position, step, ERROR, elapsed, describe_error(exc))
            except TaskOwnershipLost:
                pass  # the host's own exception goes on; the next step is not ours to run
            raise
        finally:
            self.in_step = False
        elapsed = int((clock() - started) * 1000)
        if step_rules.is_mapping(result):
            outcome = SUCCESS if result.get("success") else FAILED
            error = None if outcome == SUCCESS else result.get("error")
        else:
            outcome, error = FAILED, f"step returned {type(result).__name__}, not a dict"
        self._record(position, step, outcome, elapsed, error)
        return result

    def _record(self, position: int, step: Any, outcome: str, elapsed_ms: int, error: Any) -> None:
        if outcome == SUCCESS:
            self.succeeded.add(position)
            self._advance_resume_point()
        else:
            self.succeeded.discard(position)
            self.resume_at = min(self.resume_at, position)
        digest = self.digests.get(position)
        if self.owner is None or digest is None:
            return
        if self.degraded and not self.pending:
            return  # not an outage: recording stopped for good
        slot = self.plan.record(position, outcome, digest)
        self.pending.append(dict(
            step_number=slot, execution_result=outcome, step_type=step_rules.step_type(step),
            target_file=step_rules.target_file(step), content_hash=digest,
            execution_time_ms=elapsed_ms, error_detail=None if error is None else safe_text(error),
            last_completed_step=self.resume_at - 1, total_steps=self.steps.total))
        self._flush(self.owner, force=not self.degraded)

    def _flush(self, owner: str, force: bool) -> None:
        """Write the pending records in order; patient (rides out a restart) unless degraded."""
        if not self.pending:
            return
        now = time.monotonic()
        if not force and now - self.last_flush < self.FLUSH_EVERY:
            return
        self.last_flush = now
        try:
            while self.pending:
                self.store.record_step(self.task_id, owner=owner, patient=not self.degraded,
                                       **self.pending[0])
                self.pending.pop(0)
        except TaskOwnershipLost:
            self.owner = None
            self.pending.clear()
            raise
        except Exception as exc:  # a failed record never fails the step (an outage keeps them pending)
            self._degrade(exc, "recording a step")
            return
        if self.degraded:
            self._log(logging.INFO, "[CHECKPOINT] task %s: the ledger answers again; recording resumed",
                      self.task_id, action="checkpoint_available")
            self.degraded = False


__all__ = ["TaskRun", "safe_text"]
