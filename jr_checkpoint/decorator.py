"""``@checkpointed_steps``: skip what already succeeded, record every step, resume after a crash.

The host's loop stays the host's. While a decorated ``execute_steps`` runs, a frame on a
context variable says which task it is and which steps it was given; ``execute`` on the
instance's class carries a pass-through wrapper that looks for that frame. So each
``self.execute(step)`` call inside the loop is intercepted, located in ``steps``, skipped
when the ledger already has it, and recorded otherwise. Context variables, not state on the
class, keep threads and nested calls apart.

The task id is, in order: the ``task_id=`` option, ``self._current_task_id``, else the
``task['id']`` of the ``process_queue_task(task)`` call the steps run under (install()
wraps that method too).

Fail-open: when the ledger cannot be reached, the call runs as undecorated.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import wrapt

from . import hooks, telemetry
from .dsn import Dsn
from .errors import TaskExhaustedError
from .log import emit
from .options import ExhaustedHook, FinishedHook, Options, TaskIdGetter
from .steps import StepSequence, is_task_id
from .store import CheckpointStore
from .task_run import TaskRun
from .text import describe_error, safe_text

#: A decorated function: ``checkpointed_steps`` gives back a callable of the same type.
F = TypeVar("F", bound=Callable[..., Any])
#: A wrapped call's positional and keyword arguments (wrapt's ``args, kwargs``).
Args = tuple[Any, ...]
Kwargs = dict[str, Any]

logger = logging.getLogger(__name__)

_frames: contextvars.ContextVar[tuple[TaskRun, ...]] = contextvars.ContextVar(
    "jr_checkpoint_frames", default=()
)
_queue_tasks: contextvars.ContextVar[tuple[_QueueTask, ...]] = contextvars.ContextVar(
    "jr_checkpoint_queue_tasks", default=()
)


class _QueueTask:
    """One ``process_queue_task(task)`` call: whose task, and its id (or why there is none)."""

    __slots__ = ("instance", "task_id", "warned")

    def __init__(self, instance: Any, task_id: Any):
        self.instance = instance
        self.task_id = task_id
        self.warned = False


def _running(instance: Any) -> TaskRun | None:
    """The innermost checkpointed call of ``instance`` in this context, if any."""
    for run in reversed(_frames.get()):
        if run.instance is instance:
            return run
    return None


def _intercept_execute(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
    """On the host's ``execute``: a pass-through unless a checkpointed call is running."""
    run = _running(instance)
    if run is None or run.in_step or run.passthrough:
        return wrapped(*args, **kwargs)
    return run.run_step(wrapped, args, kwargs)


def _intercept_already_succeeded(wrapped: Callable[..., Any], instance: Any, args: Args,
                                 kwargs: Kwargs) -> Any:
    """The host's own check, while the decorator checks: "no", so the step reaches execute()."""
    if _running(instance) is not None:
        return False
    return wrapped(*args, **kwargs)


def _intercept_record(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
    """The host's own record, while the decorator records: nothing (no second row, no connection)."""
    if _running(instance) is not None:
        return None
    return wrapped(*args, **kwargs)


#: Methods of the host's class wrapped while checkpointed calls run: one path at a time.
_INTERCEPTED = {
    "execute": _intercept_execute,
    "_step_already_succeeded": _intercept_already_succeeded,
    "_record_step_result": _intercept_record,
}

_hooks: dict[tuple[type, str], Any] = {}
_hooks_lock = threading.Lock()


def _hook_class(cls: type) -> None:
    """Put the pass-through wrappers on the classes that define the intercepted methods (once)."""
    for name, wrapper in _INTERCEPTED.items():
        owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
        if owner is None or (owner, name) in _hooks:
            continue
        with _hooks_lock:
            original = owner.__dict__[name]
            if (owner, name) in _hooks or _is_ours(original, wrapper):
                continue
            _hooks[(owner, name)] = original
            setattr(owner, name, wrapt.FunctionWrapper(original, wrapper))


def unhook_execute() -> None:
    """Give every hooked class its own methods back."""
    with _hooks_lock:
        for (owner, name), original in _hooks.items():
            setattr(owner, name, original)
        _hooks.clear()


def _is_ours(attribute: Any, wrapper: Any) -> bool:
    return isinstance(attribute, wrapt.FunctionWrapper) and attribute._self_wrapper is wrapper


def is_checkpointed(attribute: Any) -> bool:
    """True when ``attribute`` (from a class ``__dict__``) is wrapped by ``@checkpointed_steps``."""
    return isinstance(attribute, wrapt.FunctionWrapper) and isinstance(
        attribute._self_wrapper, StepSequenceWrapper
    )


# -- the task id from process_queue_task(task) ------------------------------------------------

def _queue_task_wrapper(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
    """On the host's ``process_queue_task``: remember ``task['id']`` while the call runs."""
    task = args[0] if args else kwargs.get("task")
    try:
        task_id = task.get("id") if isinstance(task, Mapping) else None
    except Exception:
        task_id = None
    token = _queue_tasks.set((*_queue_tasks.get(), _QueueTask(instance, task_id)))
    try:
        return wrapped(*args, **kwargs)
    finally:
        _queue_tasks.reset(token)


def wrap_queue_task(function: Any) -> Any:
    """``process_queue_task`` wrapped so that the steps run under it know their task."""
    return wrapt.FunctionWrapper(function, _queue_task_wrapper)


def is_queue_task_wrapper(attribute: Any) -> bool:
    return _is_ours(attribute, _queue_task_wrapper)


def _queue_task_id(instance: Any) -> Any:
    for frame in reversed(_queue_tasks.get()):
        if frame.instance is instance:
            if not is_task_id(frame.task_id) and not frame.warned:
                frame.warned = True
                emit(logger, logging.WARNING,
                     "[CHECKPOINT] task['id'] is %s, not an integer; running the task unchecked",
                     safe_text(repr(frame.task_id)) if frame.task_id is not None else "missing",
                     action="bad_task_id")
            return frame.task_id if is_task_id(frame.task_id) else None
    return None


# -- the wrapper around execute_steps ----------------------------------------------------------

def _bind_steps(args: Args, kwargs: Kwargs) -> tuple[Any, Callable[[Any], tuple[Args, Kwargs]]]:
    """The ``steps`` argument, and a function that puts a replacement in its place."""
    if args:
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    if "steps" in kwargs:
        return kwargs["steps"], lambda new: (args, {**kwargs, "steps": new})
    return None, lambda new: (args, kwargs)


class StepSequenceWrapper:
    """The wrapt wrapper around ``execute_steps``; owns the store it opens for ``dsn=``."""

    def __init__(self, options: Options):
        self.options = options
        self._store: CheckpointStore | None = None
        self._store_lock = threading.Lock()

    def store(self) -> CheckpointStore:
        if self.options.store is not None:
            return self.options.store
        with self._store_lock:
            if self._store is None:
                self._store = CheckpointStore(self.options.dsn) if self.options.dsn is not None \
                    else default_store()
            return self._store

    def close(self) -> None:
        """Close the store this wrapper opened for its ``dsn=`` (not a shared or given one)."""
        with self._store_lock:
            if self._store is not None and self.options.dsn is not None and self.options.store is None:
                self._store.close()
            self._store = None

    def _task_id(self, instance: Any, args: Args, kwargs: Kwargs) -> Any:
        if self.options.task_id is not None:
            return self.options.task_id(instance, args, kwargs)
        explicit = getattr(instance, "_current_task_id", None)
        if explicit is not None:
            return explicit
        return _queue_task_id(instance)

    def __call__(self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        if not self.options.enabled or instance is None:
            return wrapped(*args, **kwargs)
        try:
            task_id = self._task_id(instance, args, kwargs)
        except Exception as exc:
            emit(logger, logging.WARNING, "[CHECKPOINT] finding the task id failed (%s); running unchecked",
                 describe_error(exc), action="bad_task_id")
            telemetry.count_unchecked(None, reason="bad_task_id")
            return wrapped(*args, **kwargs)
        if task_id is None:
            return wrapped(*args, **kwargs)
        if not is_task_id(task_id):
            emit(logger, logging.WARNING,
                 "[CHECKPOINT] task id %s is not an integer; running the task unchecked",
                 safe_text(repr(task_id)), action="bad_task_id")
            telemetry.count_unchecked(None, reason="bad_task_id")
            return wrapped(*args, **kwargs)
        steps, replace = _bind_steps(args, kwargs)
        numbered = StepSequence(steps if steps is not None else ())
        if steps is not None:
            args, kwargs = replace(numbered.argument)
        frames = _frames.get()
        nested = any(run.instance is instance and run.task_id == task_id for run in frames)
        run = TaskRun(instance, task_id, numbered, self.store(), self.options, passthrough=nested)
        with telemetry.call_span(task_id) as span:
            if not nested:
                try:
                    run.begin()
                except TaskExhaustedError:
                    hooks.task_finished(run, self.options.on_task_finished)
                    raise
                _hook_class(type(instance))
            token = _frames.set((*frames, run))
            try:
                result = wrapped(*args, **kwargs)
            except BaseException:
                run.finish(completed=False)
                span.set_outcome("nested" if nested else run.outcome)  # None: from the exception
                if not nested:
                    hooks.task_finished(run, self.options.on_task_finished)
                raise
            finally:
                _frames.reset(token)
            run.finish(completed=run.all_succeeded())
            span.set_outcome("nested" if nested else run.outcome)
        if not nested:
            hooks.task_finished(run, self.options.on_task_finished)
        return result


_default_store: CheckpointStore | None = None
_default_store_lock = threading.Lock()


def default_store() -> CheckpointStore:
    """One shared store for the resolved default database."""
    global _default_store
    with _default_store_lock:
        if _default_store is None:
            _default_store = CheckpointStore()
        return _default_store


def close_default_store() -> None:
    global _default_store
    with _default_store_lock:
        if _default_store is not None:
            _default_store.close()
        _default_store = None


class _CheckpointedFunction(wrapt.FunctionWrapper[..., Any]):
    """A decorated ``execute_steps``; in a class body it also wraps ``process_queue_task``."""

    def __set_name__(self, owner: type, name: str) -> None:
        original = owner.__dict__.get("process_queue_task")
        if original is not None and not is_queue_task_wrapper(original):
            setattr(owner, "process_queue_task", wrap_queue_task(original))  # noqa: B010 (any class)


@overload
def checkpointed_steps(
    wrapped: F, *, store: CheckpointStore | None = ..., dsn: Dsn = ...,
    task_id: TaskIdGetter | None = ..., enabled: bool = ..., wait: float | None = ...,
    max_attempts: int | None = ..., on_exhausted: ExhaustedHook | None = ...,
    on_task_finished: FinishedHook | None = ..., clock: Callable[[], float] = ...,
) -> F: ...


@overload
def checkpointed_steps(
    wrapped: None = None, *, store: CheckpointStore | None = ..., dsn: Dsn = ...,
    task_id: TaskIdGetter | None = ..., enabled: bool = ..., wait: float | None = ...,
    max_attempts: int | None = ..., on_exhausted: ExhaustedHook | None = ...,
    on_task_finished: FinishedHook | None = ..., clock: Callable[[], float] = ...,
) -> Callable[[F], F]: ...


def checkpointed_steps(
    wrapped: F | None = None,
    *,
    store: CheckpointStore | None = None,
    dsn: Dsn = None,
    task_id: TaskIdGetter | None = None,
    enabled: bool = True,
    wait: float | None = 0.0,
    max_attempts: int | None = None,
    on_exhausted: ExhaustedHook | None = None,
    on_task_finished: FinishedHook | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> F | Callable[[F], F]:
    """Checkpoint every step of ``execute_steps``; usable bare or with options.

    - ``store`` / ``dsn``: the ledger (default: one shared store on the resolved database;
      ``dsn=`` opens one store for this function, at its first call).
    - ``task_id(instance, args, kwargs)``: the task id (default: ``self._current_task_id``,
      else ``task['id']`` of the ``process_queue_task(task)`` call it runs under).
    - ``wait``: seconds to wait for another worker to finish the task (``None``: forever);
      0, the default, raises :class:`TaskLockedError` at once.
    - ``max_attempts`` / ``on_exhausted(task_id, checkpoint)``: escalate a task that is still
      unfinished when it starts attempt ``max_attempts + 1``; then :class:`TaskExhaustedError`.
    - ``on_task_finished(trajectory, outcome)``: called once per call that ends ``finished``,
      ``failed`` or ``exhausted``, after its attempt is written, outside any step, with the
      task's :func:`jr_checkpoint.trajectory`; an exception in it is logged and contained.
    - ``enabled=False``: the original runs untouched.
    """
    options = Options(store=store, dsn=dsn, task_id=task_id, enabled=enabled, wait=wait,
                      max_attempts=max_attempts, on_exhausted=on_exhausted,
                      on_task_finished=on_task_finished, clock=clock)
    return decorate(wrapped, options)


def decorate(wrapped: F | None, options: Options) -> F | Callable[[F], F]:
    def apply(function: F) -> F:
        # The wrapper proxies the function (wrapt): callers see the function's own type.
        return _CheckpointedFunction(function, StepSequenceWrapper(options))  # type: ignore[return-value]

    if wrapped is None:
        return apply
    return apply(wrapped)
