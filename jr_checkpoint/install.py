"""``install()`` / ``uninstall()``: apply the decorator to the host when its modules are imported.

The Jr worker runs from inside ``jr_executor/`` and imports ``task_executor`` and
``jr_queue_client`` as top-level modules; other code imports ``jr_executor.task_executor``.
So every name is hooked, and whichever module is imported, before or after ``install()``,
gets its class wrapped once: ``execute_steps`` checkpointed, ``process_queue_task`` telling
the steps under it their task (``task['id']``), and the queue client given the seed's three
checkpoint methods when it lacks them.

wrapt's post-import hooks run at once when the module is already imported, else right after
it is. wrapt has no unpatch, so every attribute replaced or added is remembered with what was
in the class's ``__dict__`` before, and ``uninstall()`` puts exactly that back.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import wrapt

from . import decorator
from .dsn import Dsn
from .log import emit
from .options import Options, make_options
from .store import CheckpointStore
from .text import safe_text

logger = logging.getLogger(__name__)

#: Where the host's executor and queue client live, under every name the host imports them.
DEFAULT_TARGETS = ("task_executor:TaskExecutor.execute_steps",
                   "jr_executor.task_executor:TaskExecutor.execute_steps")
DEFAULT_QUEUE_CLIENTS = ("jr_queue_client:JrQueueClient", "jr_executor.jr_queue_client:JrQueueClient")

_MISSING = object()


@dataclass
class _Installation:
    store: CheckpointStore
    owns_store: bool
    options: Options
    explicit: bool  # targets named by the caller: a missing one is worth a warning
    patched: list[tuple[type, str, Any]] = field(default_factory=list)
    wrappers: list[decorator.StepSequenceWrapper] = field(default_factory=list)


_current: _Installation | None = None
_lock = threading.RLock()


def _split(spec: str) -> tuple[str, list[str]]:
    module, _, path = spec.partition(":")
    if not module or not path:
        raise ValueError(f"expected 'module:Class.attribute', got {spec!r}")
    return module, path.split(".")


def _owner(module: Any, path: list[str]) -> Any:
    owner = module
    for name in path:
        owner = getattr(owner, name)
    return owner


def _set(installation: _Installation, owner: type, name: str, value: Any) -> None:
    installation.patched.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, value)


def _missing(installation: _Installation, what: str) -> None:
    """Only a target the caller named is worth a warning: the defaults cover names that a
    host imports one way or the other, never both."""
    if installation.explicit:
        emit(logger, logging.WARNING, "[CHECKPOINT] %s not found; nothing installed there", what,
             action="install_target_missing")


def _wrap_target(installation: _Installation, module: Any, path: list[str]) -> None:
    try:
        owner = _owner(module, path[:-1])
    except AttributeError:
        _missing(installation, f"{module.__name__}.{'.'.join(path[:-1])}")
        return
    name = path[-1]
    original = _defined(owner, name)
    if original is _MISSING:
        _missing(installation, f"{module.__name__}.{'.'.join(path)}")
        return
    if not decorator.is_checkpointed(original):  # else decorated in the source or already
        wrapper = decorator.StepSequenceWrapper(installation.options)
        installation.wrappers.append(wrapper)
        _set(installation, owner, name, wrapt.FunctionWrapper(original, wrapper))
    queue_task = _defined(owner, "process_queue_task")
    if queue_task is not _MISSING and not decorator.is_queue_task_wrapper(queue_task):
        _set(installation, owner, "process_queue_task", decorator.wrap_queue_task(queue_task))


def _defined(owner: Any, name: str) -> Any:
    """``name`` as the class defines or inherits it (from the defining class's ``__dict__``,
    so a method stays a plain function), else _MISSING."""
    if not isinstance(owner, type):
        return owner.__dict__.get(name, _MISSING)
    for cls in owner.__mro__:
        if name in cls.__dict__:
            return cls.__dict__[name]
    return _MISSING


# -- the seed's Step 3 trio, for a JrQueueClient that lacks it: one implementation, the store's --

def _store() -> CheckpointStore:
    installation = _current
    return installation.store if installation is not None else decorator.default_store()


def save_checkpoint(self: Any, task_id: int, last_completed_step: int, total_steps: int | None = None,
                    checkpoint_data: dict[str, Any] | None = None) -> bool:
    """Save a checkpoint for a task so it can resume on retry (True if saved)."""
    return _store().save_checkpoint(task_id, last_completed_step, total_steps, checkpoint_data)


def get_last_checkpoint(self: Any, task_id: int) -> dict[str, Any] | None:
    """Get the last checkpoint for a task (for resume-from-failure), or None."""
    return _store().get_last_checkpoint(task_id)


def cleanup_checkpoints(self: Any, task_id: int) -> bool:
    """Remove checkpoints after a task completes successfully (True if it worked)."""
    return _store().cleanup_checkpoints(task_id)


QUEUE_METHODS = {f.__name__: f for f in (save_checkpoint, get_last_checkpoint, cleanup_checkpoints)}


def _add_queue_methods(installation: _Installation, module: Any, path: list[str]) -> None:
    try:
        cls = _owner(module, path)
    except AttributeError:
        _missing(installation, f"{module.__name__}.{'.'.join(path)}")
        return
    for name, function in QUEUE_METHODS.items():
        if not hasattr(cls, name):  # the host's own methods, whatever their body, stay
            _set(installation, cls, name, function)


def _hook(installation: _Installation, spec: str,
          apply: Callable[[_Installation, Any, list[str]], None]) -> None:
    module_name, path = _split(spec)

    def on_import(module: Any) -> None:
        with _lock:
            if _current is not installation:
                return  # uninstalled before the host was imported
            try:
                apply(installation, module, path)
            except Exception as exc:  # an exception here would fail the host's import
                emit(logger, logging.WARNING, "[CHECKPOINT] could not install on %s: %s", spec,
                     safe_text(exc), action="install_failed")

    wrapt.register_post_import_hook(on_import, module_name)


def _specs(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    specs = (value,) if isinstance(value, str) else tuple(value)
    for spec in specs:
        _split(spec)
    return specs


def install(
    dsn: Dsn = None,
    *,
    target: str | Sequence[str] | None = None,
    queue_client: str | Sequence[str] | None = DEFAULT_QUEUE_CLIENTS,
    store: CheckpointStore | None = None,
    **options: Any,
) -> CheckpointStore:
    """Checkpoint the host's ``execute_steps``, now or when its module is imported.

    ``target`` / ``queue_client``: ``"module:Class.method"`` / ``"module:Class"`` specs
    (default: the host's, under both names). ``options`` are those of
    :func:`checkpointed_steps` (``wait``, ``max_attempts``, ``on_exhausted``, ...); a
    misspelled one raises ``TypeError`` here. Calling it again while installed changes
    nothing. Returns the store, for inspection.
    """
    global _current
    with _lock:
        if _current is not None:
            return _current.store
        targets = _specs(target) or DEFAULT_TARGETS
        clients = _specs(queue_client)
        if isinstance(options.get("on_task_finished"), str):
            options["on_task_finished"] = named_hook(options["on_task_finished"])
        ledger = store or CheckpointStore(dsn)
        installation = _Installation(ledger, store is None,
                                     make_options(store=ledger, **options),
                                     explicit=target is not None)
        _current = installation
        for spec in targets:
            _hook(installation, spec, _wrap_target)
        for spec in clients:
            _hook(installation, spec, _add_queue_methods)
        return installation.store


def uninstall() -> None:
    """Put back exactly what ``install()`` replaced or added and close what it opened."""
    global _current
    with _lock:
        installation, _current = _current, None
        if installation is None:
            return
        for owner, name, original in reversed(installation.patched):
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        decorator.unhook_execute()
        for wrapper in installation.wrappers:
            wrapper.close()
        if installation.owns_store:
            installation.store.close()
        decorator.close_default_store()


def installed() -> bool:
    return _current is not None


class named_hook:  # noqa: N801 (a function-like callable)
    """``"package.module:function"`` as a callable that imports it at its first call, so that
    a hook named on the command line (``jr-checkpoint run --on-task-finished``) may live in a
    module the host makes importable only once it runs (its own sys.path entries)."""

    _function: Callable[..., Any] | None

    def __init__(self, spec: str):
        module, _, name = spec.partition(":")
        parts = (*module.split("."), *name.split("."))
        if not module or not name or not all(part.isidentifier() for part in parts):
            raise ValueError(f"a hook is named 'package.module:function', not {spec!r}")
        self.spec, self._module, self._name, self._function = spec, module, name, None

    def __call__(self, *args: Any) -> Any:
        if self._function is None:
            found: Any = importlib.import_module(self._module)
            for part in self._name.split("."):
                found = getattr(found, part)
            self._function = found
        return self._function(*args)

    def __repr__(self) -> str:
        return f"named_hook({self.spec!r})"


__all__ = ["DEFAULT_QUEUE_CLIENTS", "DEFAULT_TARGETS", "install", "installed", "named_hook", "uninstall"]
