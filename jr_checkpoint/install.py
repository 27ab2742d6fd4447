"""``install()`` / ``uninstall()``: apply the decorator to the host when its module is imported.

wrapt's post-import hooks run at once when the module is already imported, else right after
it is. wrapt has no unpatch, so every attribute replaced or added is remembered with what was
in the class's ``__dict__`` before, and ``uninstall()`` puts exactly that back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import wrapt

from . import decorator
from .sql import QUERIES
from .store import CheckpointStore

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "jr_executor.task_executor:TaskExecutor.execute_steps"
DEFAULT_QUEUE_CLIENT = "jr_executor.jr_queue_client:JrQueueClient"

_MISSING = object()


@dataclass
class _Installation:
    store: CheckpointStore
    owns_store: bool
    options: dict[str, Any]
    patched: list[tuple[type, str, Any]] = field(default_factory=list)


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


def _wrap_target(installation: _Installation, module: Any, path: list[str]) -> None:
    owner, name = _owner(module, path[:-1]), path[-1]
    original = owner.__dict__.get(name, _MISSING)
    if original is _MISSING:
        logger.warning("[CHECKPOINT] %s has no attribute %s; nothing installed", owner, name)
        return
    if decorator.is_checkpointed(original):
        return  # already decorated, in the source or by an earlier install
    wrapped = decorator.checkpointed_steps(original, store=installation.store, **installation.options)
    _set(installation, owner, name, wrapped)


# -- the seed's Step 3 trio, for a JrQueueClient that lacks it, built on its own _execute -------

def _first_row(rows: Any) -> dict | None:
    if not rows:
        return None
    row = rows[0]
    if isinstance(row, Mapping):
        return dict(row)
    return dict(zip(("last_completed_step", "total_steps", "checkpoint_data"), row, strict=True))


def save_checkpoint(self, task_id: int, last_completed_step: int, total_steps: int | None = None,
                    checkpoint_data: dict | None = None) -> bool:
    """Save a checkpoint for a task so it can resume on retry (True if saved)."""
    import json

    try:
        self._execute(QUERIES["save_checkpoint"], {
            "task_id": task_id, "last_completed_step": last_completed_step,
            "total_steps": total_steps,
            "checkpoint_data": json.dumps(checkpoint_data) if checkpoint_data else None,
        }, fetch=False)
        return True
    except Exception as e:
        logger.warning("[JrQueue] Failed to save checkpoint for task %s: %s", task_id, e)
        return False


def get_last_checkpoint(self, task_id: int) -> dict | None:
    """Get the last checkpoint for a task (for resume-from-failure), or None."""
    try:
        return _first_row(self._execute(QUERIES["get_last_checkpoint"], {"task_id": task_id}))
    except Exception as e:
        logger.warning("[JrQueue] Failed to get checkpoint for task %s: %s", task_id, e)
        return None


def cleanup_checkpoints(self, task_id: int) -> bool:
    """Remove checkpoints after a task completes successfully (True if it worked)."""
    try:
        self._execute(QUERIES["cleanup_checkpoints"], {"task_id": task_id}, fetch=False)
        return True
    except Exception as e:
        logger.warning("[JrQueue] Failed to cleanup checkpoints for task %s: %s", task_id, e)
        return False


QUEUE_METHODS = {f.__name__: f for f in (save_checkpoint, get_last_checkpoint, cleanup_checkpoints)}


def _add_queue_methods(installation: _Installation, module: Any, path: list[str]) -> None:
    cls = _owner(module, path)
    for name, function in QUEUE_METHODS.items():
        if not hasattr(cls, name):
            _set(installation, cls, name, function)


def _hook(installation: _Installation, spec: str, apply: Any) -> None:
    module_name, path = _split(spec)

    def on_import(module: Any) -> None:
        with _lock:
            if _current is not installation:
                return  # uninstalled before the host was imported
            try:
                apply(installation, module, path)
            except Exception as exc:  # an exception here would fail the host's import
                logger.warning("[CHECKPOINT] could not install on %s: %s", spec, exc)

    wrapt.register_post_import_hook(on_import, module_name)


def install(
    dsn: Any = None,
    *,
    target: str = DEFAULT_TARGET,
    queue_client: str | None = DEFAULT_QUEUE_CLIENT,
    store: CheckpointStore | None = None,
    **options: Any,
) -> CheckpointStore:
    """Checkpoint the host's ``execute_steps``, now or when its module is imported.

    Calling it again while installed changes nothing. ``options`` are those of
    :func:`checkpointed_steps` (``wait``, ``max_attempts``, ``on_exhausted``, ...).
    Returns the store, for inspection.
    """
    global _current
    with _lock:
        if _current is not None:
            return _current.store
        _split(target)
        if queue_client:
            _split(queue_client)
        installation = _Installation(store or CheckpointStore(dsn), store is None, options)
        _current = installation
        _hook(installation, target, _wrap_target)
        if queue_client:
            _hook(installation, queue_client, _add_queue_methods)
        return installation.store


def uninstall() -> None:
    """Put back exactly what ``install()`` replaced or added; a no-op when not installed."""
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
        if installation.owns_store:
            installation.store.close()


def installed() -> bool:
    return _current is not None


__all__ = ["install", "installed", "uninstall"]
