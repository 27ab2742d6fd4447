"""One checkpointed ``execute_steps`` call: take the task, skip or run and record each step,
give the task back. :mod:`jr_checkpoint.decorator` makes a :class:`TaskRun` per call and sends
it the host's ``execute`` calls; this module decides what happens to each step and talks to the
ledger (:class:`jr_checkpoint.ledger.Ledger`: the store, or a test's fake). A step's path runs
decorator → here → steps (what the step is) → store → ledger (its row) → db.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from . import steps as step_rules
from . import telemetry
from .errors import (
    DatabaseUnavailable,
    IncompatibleSchema,
    TaskExhaustedError,
    TaskLockedError,
    TaskOwnershipLost,
)
from .ledger import AttemptEnd, Ledger, TaskState
from .log import emit
from .options import Options
from .steps import ERROR, FAILED, SUCCESS, Row, SlotPlan, StepSequence
from .text import describe_error, safe_text

logger = logging.getLogger(__name__)


class Recording(enum.Enum):
    """Where a call's records go. The transitions (anything else is a bug):

    - ``NONE`` → ``LIVE`` when the call takes the task's lease; it stays ``NONE`` (the whole
      call unchecked) when the ledger could not be reached at its start;
    - ``LIVE`` → ``OUTAGE`` when a record cannot be written for now (a dropped connection, a
      full disk, a failover): records wait in ``pending``; ``OUTAGE`` → ``LIVE`` when they
      are written;
    - ``LIVE``/``OUTAGE`` → ``OFF`` when a record failed in a way that would fail again: the
      rest of the call runs unrecorded (its lease is still held and checked);
    - ``LIVE``/``OUTAGE``/``OFF`` → ``LOST`` when another worker took the task over, or the
      lease surely ran out by our own clock without a renewal: no further step runs;
    - any → ``ENDED`` when the attempt is closed (by the last step's record, or at the end).
    """

    NONE = "none"
    LIVE = "live"
    OUTAGE = "outage"
    OFF = "off"
    LOST = "lost"
    ENDED = "ended"


#: States in which the call holds the task's lease.
_HOLDING = (Recording.LIVE, Recording.OUTAGE, Recording.OFF)


class TaskRun:
    """One decorated ``execute_steps`` call for one task."""

    #: While the ledger is unreachable, try to write what is pending at most this often.
    FLUSH_EVERY = 2.0

    def __init__(self, instance: Any, task_id: int, steps: StepSequence, store: Ledger,
                 options: Options, passthrough: bool = False):
        self.instance = instance
        self.task_id = task_id
        self.steps = steps
        self.store = store
        self.options = options
        self.passthrough = passthrough
        self.in_step = False
        self.recording = Recording.NONE
        self.state = TaskState(attempt=1, checkpoint=None)
        self.plan = SlotPlan(task_id, {})
        self.digests: dict[int, str | None] = {}
        self.pending: list[dict[str, Any]] = []  # records not yet written (OUTAGE)
        self.last_flush = 0.0
        self.succeeded: set[int] = set()  # positions known to have succeeded
        self.resume_at = 0  # the first position not known to have succeeded
        self.unchecked_warned = False
        self.expired = False  # LOST by our own clock (nobody took the task: pending may land)
        self.unrecorded = 0  # steps run whose record was dropped
        self.outcome: str | None = None  # how the attempt ended, once ENDED
        # For the attempt's row: step numbers (ledger slots) run, failed and skipped.
        self.ran: dict[int, None] = {}
        self.failed: dict[int, None] = {}
        self.skipped: dict[int, None] = {}
        self.first_run: int | None = None

    @property
    def owner(self) -> str | None:
        """Our lease token while we hold the task."""
        return self.state.owner if self.recording in _HOLDING else None

    def _log(self, level: int, message: str, *args: Any, action: str, **extra: Any) -> None:
        emit(logger, level, message, *args, action=action, task_id=self.task_id, **extra)

    # -- fail-open --------------------------------------------------------------------------

    def _degrade(self, exc: BaseException, doing: str) -> None:
        """A ledger call failed: an outage keeps the records, anything else stops recording."""
        outage = isinstance(exc, DatabaseUnavailable)
        said = isinstance(exc, IncompatibleSchema)  # said once per store, by the store
        if self.recording in (Recording.LIVE, Recording.NONE):
            telemetry.count_unchecked(self.task_id, "incompatible_schema" if said else "ledger_failed")
            if outage:
                telemetry.count_outage(self.task_id)
            if not said:
                self._log(logging.WARNING, "[CHECKPOINT] task %s: %s failed, running the rest unchecked: %s",
                          self.task_id, doing, safe_text(exc), action="checkpoint_unavailable")
        if self.recording in (Recording.LIVE, Recording.OUTAGE):
            if outage:
                self.recording = Recording.OUTAGE
            else:
                if self.pending:
                    self._log(logging.WARNING,
                              "[CHECKPOINT] task %s: %s step record(s) dropped: the ledger refused them (%s)",
                              self.task_id, len(self.pending), safe_text(exc), action="records_dropped")
                self.unrecorded += len(self.pending)
                self.pending.clear()
                self.recording = Recording.OFF

    def _lose(self, reason: str, position: int | None, *, expired: bool = False) -> TaskOwnershipLost:
        self.recording, self.expired = Recording.LOST, expired
        if not expired:
            self.unrecorded += len(self.pending)
            self.pending.clear()  # refused, whatever happens: another worker has the task
        where = f" before step {position}" if position is not None else ""
        self._log(logging.WARNING, "[CHECKPOINT] task %s: %s; stopping%s", self.task_id, reason, where,
                  action="lease_lost")
        telemetry.count_lease_loss(self.task_id)
        return TaskOwnershipLost(f"task {self.task_id}: {reason}; stopping{where}")

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
        self.state, self.recording = state, Recording.LIVE
        self.store.hold(self.task_id, cast(str, state.owner), state.lease_until)  # begin_task's: set
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
        """Every position a success: run or skipped in this call, or known by its identity. All
        below resume_at are (it moves only past successes, back to a failure): one comparison."""
        self._advance_resume_point()  # past positions found succeeded since (a generator's)
        return self.steps.exhausted and self.resume_at >= len(self.steps.items)

    def _end(self, outcome: str) -> AttemptEnd:
        skipped = tuple(self.skipped)
        return AttemptEnd(outcome, self.first_run if skipped else None, tuple(self.ran), skipped,
                          tuple(self.failed))

    def finish(self, completed: bool, exhausted: bool = False) -> None:
        """Write what is pending, end the attempt, give the task up; when every step succeeded,
        drop its checkpoint. Never raises."""
        recording, self.recording = self.recording, Recording.ENDED
        if recording is not Recording.ENDED:
            try:
                self._end_attempt(recording, completed, exhausted)
            finally:
                self.recording = Recording.ENDED

    def _end_attempt(self, recording: Recording, completed: bool, exhausted: bool) -> None:
        if recording is Recording.NONE:
            self.outcome = "unchecked"
            if self.ran:  # say so in the history, if the server answers now (one try)
                try:
                    self.store.note_unchecked(self.task_id, tuple(self.ran), tuple(self.failed))
                except Exception:
                    pass
            return
        owner = cast(str, self.state.owner)  # set by begin(); forgotten by the record or release ending it
        if recording is not Recording.LOST or self.expired:
            try:
                self._flush(owner, force=True, patient=recording is not Recording.OUTAGE)
            except TaskOwnershipLost:
                recording = Recording.LOST
            if self.pending:
                self._log(logging.WARNING, "[CHECKPOINT] task %s: %s step record(s) could not be written",
                          self.task_id, len(self.pending), action="records_lost")
                self.unrecorded += len(self.pending)
                self.pending.clear()
        if self.outcome is not None:
            return  # the last step's record ended the attempt
        if recording is Recording.LOST:
            outcome = "lost"
        elif exhausted:
            outcome = "exhausted"
        elif self.unrecorded:
            outcome = "unchecked"
        else:
            outcome = "finished" if completed else "failed"
        self.outcome = outcome
        try:
            answer = self.store.release_task(
                self.task_id, owner, completed=outcome == "finished", exhausted=exhausted,
                end=self._end(outcome), patient=recording is Recording.LIVE)
        except Exception as exc:  # the lease expires by itself
            self._log(logging.WARNING, "[CHECKPOINT] task %s: giving the task up failed: %s",
                      self.task_id, safe_text(exc), action="release_failed")
            return
        if answer == "released":
            self._log(logging.INFO, "[CHECKPOINT] task %s complete, checkpoint cleaned up",
                      self.task_id, action="task_completed")
        elif answer == "lost":
            self.outcome = "lost"

    # -- one step ---------------------------------------------------------------------------

    def run_step(self, execute: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        step = args[0] if args else kwargs.get("step")
        position = self.steps.locate(step)
        if position is None:
            return execute(*args, **kwargs)
        if position not in self.digests:
            self._match(position, step)
        if position in self.succeeded:  # known from the ledger, even if it is unreachable now
            self._log(logging.INFO, "[CHECKPOINT] Step %s already succeeded, skipping", position,
                      action="step_skipped", step_number=position)
            telemetry.skipped_step(self.task_id, position, step_rules.step_type(step))
            slot = self.plan.slot_of.get(position)
            if slot is not None:
                self.skipped[slot] = None
            return step_rules.skipped_result(step, position)
        if self.recording in _HOLDING:
            self._check_lease(position)
        elif self.recording is Recording.LOST:
            raise TaskOwnershipLost(f"task {self.task_id}: the task is no longer ours; "
                                    f"not running step {position}")
        clock = self.options.clock
        with telemetry.step_span(self.task_id, position, step_rules.step_type(step)) as span:
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
                span.set_outcome(ERROR if self._checked(position) else "unchecked")
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
            span.set_outcome(outcome if self._checked(position) else "unchecked")
        return result

    def _checked(self, position: int) -> bool:
        """Whether the step at ``position`` is in the ledger now (telemetry's "unchecked" if not):
        recorded live, or by the statement that ended the attempt."""
        return self.digests.get(position) is not None and (
            self.recording is Recording.LIVE
            or (self.recording is Recording.ENDED and self.outcome is not None and not self.pending))

    def _check_lease(self, position: int) -> None:
        """Before a step runs: is the task still surely ours?"""
        owner = cast(str, self.state.owner)  # set by begin(), which took the task
        if self.store.lost(self.task_id, owner):
            raise self._lose("another worker took it over", position)
        if self.store.clock() >= self.store.lease_until(self.task_id, owner):
            raise self._lose(f"its lease ran out ({self.store.lease:g} s) without a renewal "
                             f"(the ledger did not answer)", position, expired=True)

    def _record(self, position: int, step: Any, outcome: str, elapsed_ms: int, error: Any) -> None:
        if outcome == SUCCESS:
            self.succeeded.add(position)
            self._advance_resume_point()
        else:
            self.succeeded.discard(position)
            self.resume_at = min(self.resume_at, position)
        digest = self.digests.get(position)
        if self.recording not in _HOLDING or digest is None:
            if self.recording is Recording.NONE and digest is not None:
                self._note_ran(self.plan.slot(position), outcome)
            return
        slot = self.plan.record(position, outcome, digest)
        self._note_ran(slot, outcome)
        if self.recording is Recording.OFF:
            self.unrecorded += 1
            return
        record = dict(
            step_number=slot, execution_result=outcome, step_type=step_rules.step_type(step),
            target_file=step_rules.target_file(step), content_hash=digest,
            execution_time_ms=elapsed_ms, error_detail=None if error is None else safe_text(error),
            last_completed_step=self.resume_at - 1, total_steps=self.steps.total)
        if (outcome == SUCCESS and self.recording is Recording.LIVE and not self.pending
                and self.all_succeeded()):
            record["end"] = self._end("finished")  # the last step: the same statement ends the attempt
        self.pending.append(record)
        self._flush(cast(str, self.state.owner), force=self.recording is Recording.LIVE)

    def _note_ran(self, slot: int, outcome: str) -> None:
        if self.first_run is None:
            self.first_run = slot
        self.ran[slot] = None
        if outcome == SUCCESS:
            self.failed.pop(slot, None)
        else:
            self.failed[slot] = None

    def _flush(self, owner: str, force: bool, patient: bool | None = None) -> None:
        """Write the pending records in order; patient (rides out a restart) unless in an outage."""
        if not self.pending:
            return
        now = time.monotonic()
        if not force and now - self.last_flush < self.FLUSH_EVERY:
            return
        self.last_flush = now
        if patient is None:
            patient = self.recording is Recording.LIVE
        try:
            while self.pending:
                record = self.pending[0]
                started = time.perf_counter()
                self.store.record_step(self.task_id, owner=owner, patient=patient, **record)
                telemetry.record_latency(time.perf_counter() - started)
                self.pending.pop(0)
                if record.get("end") is not None:
                    self.outcome = record["end"].outcome
                    self._log(logging.INFO, "[CHECKPOINT] task %s complete, checkpoint cleaned up",
                              self.task_id, action="task_completed")
        except TaskOwnershipLost:
            raise self._lose("another worker took it over", None) from None
        except Exception as exc:  # a failed record never fails the step (an outage keeps them pending)
            self._degrade(exc, "recording a step")
            return
        if self.recording is Recording.OUTAGE:
            self._log(logging.INFO, "[CHECKPOINT] task %s: the ledger answers again; recording resumed",
                      self.task_id, action="checkpoint_available")
            self.recording = Recording.LIVE
        if self.outcome is not None:
            self.recording = Recording.ENDED


__all__ = ["Recording", "TaskRun"]
