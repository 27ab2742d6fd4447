"""``@checkpointed_steps``: skip what already succeeded, record every step, resume after a crash.

The host's loop stays the host's. While a decorated ``execute_steps`` runs, a frame on a
context variable says which task it is and which steps it was given; ``execute`` on the
instance's class carries a pass-through wrapper that looks for that frame. So each
``self.execute(step)`` call inside the loop is intercepted, numbered by its position in
``steps``, skipped when the ledger already has it, and recorded otherwise. Context
variables, not state on the class, keep threads and nested calls apart.

Fail-open: when the ledger cannot be reached, the call runs exactly as undecorated.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import wrapt

from .errors import CheckpointError, DatabaseUnavailable, TaskExhaustedError, TaskLockedError
from .steps import StepSequence
from .store import ERROR, FAILED, SUCCESS, CheckpointStore, TaskState, content_hash, is_task_id

logger = logging.getLogger(__name__)

TaskIdGetter = Callable[[Any, tuple, dict], Any]

_frames: contextvars.ContextVar[tuple[_Run, ...]] = contextvars.ContextVar(
    "jr_checkpoint_frames", default=()
)


@dataclass(frozen=True)
class Options:
    store: CheckpointStore | None = None
    dsn: Any = None
    task_id: TaskIdGetter | None = None
    enabled: bool = True
    wait: float | None = 0.0
    max_attempts: int | None = None
    on_exhausted: Callable[[int, dict | None], Any] | None = None
    clock: Callable[[], float] = time.perf_counter


_default_store: CheckpointStore | None = None
_default_store_lock = threading.Lock()


def _store_for(options: Options) -> CheckpointStore:
    """The store the options name, else one shared store for the resolved default database."""
    global _default_store
    if options.store is not None:
        return options.store
    with _default_store_lock:
        if options.dsn is not None:
            return CheckpointStore(options.dsn)
        if _default_store is None:
            _default_store = CheckpointStore()
        return _default_store


def _describe_step(step: Any) -> tuple[Any, Any]:
    """``step_type`` and ``target_file`` as the seed computes them; non-dict steps are 'unknown'."""
    if isinstance(step, Mapping):
        return step.get("type", "unknown"), step.get("path", step.get("filepath", ""))
    return "unknown", ""


class _Run:
    """One decorated ``execute_steps`` call for one task."""

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
        self.degraded = False
        self.locked = False
        self.lost_connection = False
        self.succeeded: set[int] = set()
        self.resume_at = 0  # the first step not known to have succeeded
        self.visited: set[int] = set()  # steps that reached execute() in this call

    # -- fail-open --------------------------------------------------------------------------

    def _degrade(self, exc: BaseException, doing: str) -> None:
        if not self.degraded:
            logger.warning(
                "[CHECKPOINT] task %s: %s failed, running the rest unchecked: %s",
                self.task_id, doing, exc,
                extra={"action": "checkpoint_unavailable", "task_id": self.task_id},
            )
        self.degraded = True
        if isinstance(exc, DatabaseUnavailable):
            self.lost_connection = True

    # -- start and end of the call ----------------------------------------------------------

    def begin(self) -> None:
        """Take the task's lock and load its records; raises only TaskLocked/TaskExhausted."""
        try:
            self.locked = self.store.lock_task(self.task_id, self.options.wait)
            if not self.locked:
                raise TaskLockedError(f"task {self.task_id} is being run by another worker")
            self.state = self.store.begin_attempt(self.task_id, self.steps.total)
        except CheckpointError as exc:
            if isinstance(exc, TaskLockedError):
                raise
            self._degrade(exc, "loading the checkpoint")
            return
        except Exception as exc:  # never let the ledger break the host
            self._degrade(exc, "loading the checkpoint")
            return
        self.succeeded = {n for n, rec in self.state.steps.items() if rec.execution_result == SUCCESS}
        self._advance_resume_point()
        self._check_attempts()

    def _check_attempts(self) -> None:
        limit = self.options.max_attempts
        if limit is None or self.state.attempt <= limit:
            return
        checkpoint = self.state.checkpoint
        logger.warning(
            "[CHECKPOINT] task %s starts attempt %s of at most %s: escalating",
            self.task_id, self.state.attempt, limit,
            extra={"action": "task_exhausted", "task_id": self.task_id},
        )
        message = f"task {self.task_id} is unfinished after {limit} attempt(s); not running it again"
        try:
            if self.options.on_exhausted is not None:
                self.options.on_exhausted(self.task_id, checkpoint)
        except Exception as exc:  # the escalation failed: still exhausted, with the cause attached
            raise TaskExhaustedError(f"{message} (on_exhausted failed: {exc})") from exc
        finally:
            self.finish(completed=False)
        raise TaskExhaustedError(message)

    def _advance_resume_point(self) -> None:
        while self.resume_at in self.succeeded:
            self.resume_at += 1

    def all_succeeded(self) -> bool:
        """Every step a success: run or skipped in this call, or recorded with its content."""
        if not self.steps.exhausted:
            return False
        for number, step in enumerate(self.steps.items):
            if number not in self.succeeded:
                return False
            if number not in self.visited:  # the host never reached it: has it changed since?
                record = self.state.steps.get(number)
                if record is None or record.content_hash != content_hash(step):
                    return False
        return True

    def finish(self, completed: bool) -> None:
        """Release the task's lock; when every step succeeded, drop its checkpoint row."""
        if not self.locked:
            return
        self.locked = False
        if self.lost_connection:
            # The lock went with the dropped session; only forget it locally.
            self.store.forget_lock(self.task_id)
            return
        try:
            if self.store.finish_task(self.task_id, completed=completed and not self.degraded):
                logger.info("[CHECKPOINT] task %s complete, checkpoint cleaned up", self.task_id,
                            extra={"action": "task_completed", "task_id": self.task_id})
        except Exception as exc:
            self._degrade(exc, "releasing the task")

    # -- one step ---------------------------------------------------------------------------

    def run_step(self, execute: Callable, args: tuple, kwargs: dict) -> Any:
        step = args[0] if args else kwargs.get("step")
        number = self.steps.locate(step)
        if number is None:
            return execute(*args, **kwargs)
        self.visited.add(number)
        digest = content_hash(step)
        if not self.degraded:
            record = self.state.steps.get(number)
            if record is not None and record.execution_result == SUCCESS:
                if record.content_hash == digest:
                    logger.info("[CHECKPOINT] Step %s already succeeded, skipping", number,
                                extra={"action": "step_skipped", "task_id": self.task_id,
                                       "step_number": number})
                    self.succeeded.add(number)
                    return {"success": True, "skipped": True, "checkpoint_hit": True,
                            "step_number": number}
                logger.info("[CHECKPOINT] Step %s changed since it succeeded, running it again",
                            number, extra={"action": "step_changed", "task_id": self.task_id,
                                           "step_number": number})
        clock = self.options.clock
        started = clock()
        self.in_step = True
        try:
            result = execute(*args, **kwargs)
        except BaseException as exc:
            elapsed = int((clock() - started) * 1000)
            self._record(number, step, digest, ERROR, elapsed, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.in_step = False
        elapsed = int((clock() - started) * 1000)
        if isinstance(result, Mapping):
            outcome = SUCCESS if result.get("success") else FAILED
            error = None if outcome == SUCCESS else result.get("error")
        else:
            outcome, error = FAILED, f"step returned {type(result).__name__}, not a dict"
        self._record(number, step, digest, outcome, elapsed, error)
        return result

    def _record(self, number: int, step: Any, digest: str, outcome: str, elapsed_ms: int,
                error: Any) -> None:
        if outcome == SUCCESS:
            self.succeeded.add(number)
            self._advance_resume_point()
        else:
            self.succeeded.discard(number)
            self.resume_at = min(self.resume_at, number)
        if self.degraded:
            return
        step_type, target_file = _describe_step(step)
        try:
            self.store.record_step(
                self.task_id, number,
                execution_result=outcome, step_type=step_type, target_file=target_file,
                content_hash=digest, execution_time_ms=elapsed_ms, error_detail=error,
                last_completed_step=self.resume_at - 1, total_steps=self.steps.total,
                checkpoint_data={"attempts": self.state.attempt, "resume_at": self.resume_at},
            )
        except Exception as exc:  # a failed record never fails the step
            self._degrade(exc, f"recording step {number}")


def _intercept_execute(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """On the host's ``execute``: a pass-through unless a checkpointed call is running."""
    for run in reversed(_frames.get()):
        if run.instance is instance:
            if run.in_step or run.passthrough:
                break
            return run.run_step(wrapped, args, kwargs)
    return wrapped(*args, **kwargs)


_hooks: dict[type, Any] = {}
_hooks_lock = threading.Lock()


def _hook_execute(cls: type) -> None:
    """Put the pass-through wrapper on the class that defines ``execute`` (once)."""
    owner = next((c for c in cls.__mro__ if "execute" in c.__dict__), None)
    if owner is None or owner in _hooks:
        return
    with _hooks_lock:
        original = owner.__dict__["execute"]
        if owner in _hooks or _is_ours(original, _intercept_execute):
            return
        _hooks[owner] = original
        owner.execute = wrapt.FunctionWrapper(original, _intercept_execute)


def unhook_execute() -> None:
    """Give every hooked class its own ``execute`` back."""
    with _hooks_lock:
        for owner, original in _hooks.items():
            owner.execute = original
        _hooks.clear()


def _is_ours(attribute: Any, wrapper: Any) -> bool:
    return isinstance(attribute, wrapt.FunctionWrapper) and attribute._self_wrapper is wrapper


def is_checkpointed(attribute: Any) -> bool:
    """True when ``attribute`` (from a class ``__dict__``) is wrapped by ``@checkpointed_steps``."""
    return isinstance(attribute, wrapt.FunctionWrapper) and isinstance(
        attribute._self_wrapper, StepSequenceWrapper
    )


def _bind_steps(args: tuple, kwargs: dict) -> tuple[Any, Callable[[Any], tuple[tuple, dict]]]:
    """The ``steps`` argument, and a function that puts a replacement in its place."""
    if args:
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    if "steps" in kwargs:
        return kwargs["steps"], lambda new: (args, {**kwargs, "steps": new})
    return None, lambda new: (args, kwargs)


class StepSequenceWrapper:
    """The wrapt wrapper around ``execute_steps``."""

    def __init__(self, options: Options):
        self.options = options

    def _task_id(self, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self.options.task_id is not None:
            return self.options.task_id(instance, args, kwargs)
        return getattr(instance, "_current_task_id", None)

    def __call__(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        if not self.options.enabled or instance is None:
            return wrapped(*args, **kwargs)
        task_id = self._task_id(instance, args, kwargs)
        if task_id is None:
            return wrapped(*args, **kwargs)
        if not is_task_id(task_id):
            logger.warning("[CHECKPOINT] task id %r is not an integer; running the task unchecked",
                           task_id, extra={"action": "bad_task_id"})
            return wrapped(*args, **kwargs)
        steps, replace = _bind_steps(args, kwargs)
        numbered = StepSequence(steps if steps is not None else ())
        if steps is not None:
            args, kwargs = replace(numbered.argument)
        frames = _frames.get()
        nested = any(run.instance is instance and run.task_id == task_id for run in frames)
        run = _Run(instance, task_id, numbered, _store_for(self.options), self.options,
                   passthrough=nested)
        if not nested:
            run.begin()
            _hook_execute(type(instance))
        token = _frames.set((*frames, run))
        try:
            result = wrapped(*args, **kwargs)
        except BaseException:
            run.finish(completed=False)
            raise
        finally:
            _frames.reset(token)
        run.finish(completed=run.all_succeeded())
        return result


def checkpointed_steps(
    wrapped: Callable | None = None,
    *,
    store: CheckpointStore | None = None,
    dsn: Any = None,
    task_id: TaskIdGetter | None = None,
    enabled: bool = True,
    wait: float | None = 0.0,
    max_attempts: int | None = None,
    on_exhausted: Callable[[int, dict | None], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Any:
    """Checkpoint every step of ``execute_steps``; usable bare or with options.

    - ``store`` / ``dsn``: the ledger (default: one shared store on the resolved database).
    - ``task_id(instance, args, kwargs)``: the task id (default: ``self._current_task_id``).
    - ``wait``: seconds to wait for another worker to finish the task (``None``: forever);
      0, the default, raises :class:`TaskLockedError` at once.
    - ``max_attempts`` / ``on_exhausted(task_id, checkpoint)``: escalate a task that is still
      unfinished when it starts attempt ``max_attempts + 1``; then :class:`TaskExhaustedError`.
    - ``enabled=False``: the original runs untouched.
    """
    options = Options(store=store, dsn=dsn, task_id=task_id, enabled=enabled, wait=wait,
                      max_attempts=max_attempts, on_exhausted=on_exhausted, clock=clock)

    def decorate(function: Callable) -> Any:
        return wrapt.FunctionWrapper(function, StepSequenceWrapper(options))

    if wrapped is None:
        return decorate
    return decorate(wrapped)
