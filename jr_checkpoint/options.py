"""The options of one checkpointed call (``@checkpointed_steps(...)``, ``install(...)``):
what :class:`~jr_checkpoint.task_run.TaskRun` runs with."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from .dsn import Dsn
from .store import CheckpointStore

#: ``task_id(instance, args, kwargs)``: the task id of a call.
TaskIdGetter = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]
#: ``on_exhausted(task_id, checkpoint)`` and ``on_task_finished(trajectory, outcome)``.
ExhaustedHook = Callable[[int, dict[str, Any] | None], Any]
FinishedHook = Callable[[dict[str, Any], str], Any]


@dataclass(frozen=True)
class Options:
    store: CheckpointStore | None = None
    dsn: Dsn = None
    task_id: TaskIdGetter | None = None
    enabled: bool = True
    wait: float | None = 0.0
    max_attempts: int | None = None
    on_exhausted: ExhaustedHook | None = None
    on_task_finished: FinishedHook | None = None
    clock: Callable[[], float] = time.perf_counter

    def __post_init__(self) -> None:
        if self.wait is not None and not (isinstance(self.wait, (int, float)) and self.wait >= 0):
            raise ValueError(f"wait must be a number of seconds >= 0 or None, not {self.wait!r}")
        if self.max_attempts is not None and not (
            isinstance(self.max_attempts, int) and self.max_attempts >= 1
        ):
            raise ValueError(f"max_attempts must be an integer >= 1 or None, not {self.max_attempts!r}")
        for name in ("task_id", "on_exhausted", "on_task_finished", "clock"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable, not {type(value).__name__}")


OPTION_NAMES = tuple(f.name for f in fields(Options))


def make_options(**options: Any) -> Options:
    """Options from keywords; a misspelled or ill-typed option fails here, at the call."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))}; "
                        f"expected some of {', '.join(OPTION_NAMES)}")
    return Options(**options)


__all__ = ["OPTION_NAMES", "ExhaustedHook", "FinishedHook", "Options", "TaskIdGetter", "make_options"]
