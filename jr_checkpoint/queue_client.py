"""The seed's Step 3 trio, with the seed's semantics: the host's queue client's
``save_checkpoint``, ``get_last_checkpoint`` and ``cleanup_checkpoints`` call these
(``install()`` points them here). Each says False or None when it failed, and logs why, as
the seed's did; none raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .db import Connector
from .log import emit
from .shape import Shape
from .steps import canonical_json

logger = logging.getLogger(__name__)


class QueueCheckpoints:
    """The three methods on a :class:`~jr_checkpoint.db.Connector`; ``shape`` reads (or gives
    the known) live tables' shape."""

    def __init__(self, connector: Connector, shape: Callable[[], Shape]):
        self.db = connector
        self._shape = shape

    def _incompatible(self) -> bool:
        """True when jr_task_checkpoints exists in a shape the ledger must not write into."""
        shape = self._shape()
        return shape.found and not shape.checkpoints_compatible

    def save_checkpoint(self, task_id: int, last_completed_step: int, total_steps: int | None = None,
                        checkpoint_data: dict[str, Any] | None = None) -> bool:
        """Save a checkpoint for a task so it can resume on retry; False if it failed."""
        try:
            if self._incompatible():
                return False  # said once, when the shape was read
            self.db.run("save_checkpoint", {
                "task_id": task_id, "last_completed_step": last_completed_step,
                "total_steps": total_steps,
                "checkpoint_data": canonical_json(checkpoint_data) if checkpoint_data else None,
            }, fetch="none")
            return True
        except Exception as exc:
            emit(logger, logging.WARNING, "[JrQueue] Failed to save checkpoint for task %s: %s",
                 task_id, exc, action="save_checkpoint_failed")
            return False

    def get_last_checkpoint(self, task_id: int) -> dict[str, Any] | None:
        """The task's last checkpoint (last_completed_step, total_steps, checkpoint_data)."""
        try:
            row = self.db.run("get_last_checkpoint", {"task_id": task_id})
        except Exception as exc:
            emit(logger, logging.WARNING, "[JrQueue] Failed to get checkpoint for task %s: %s",
                 task_id, exc, action="get_checkpoint_failed")
            return None
        if row is None:
            return None
        return dict(zip(("last_completed_step", "total_steps", "checkpoint_data"), row, strict=True))

    def cleanup_checkpoints(self, task_id: int) -> bool:
        """Remove the task's checkpoint after it completed; False if it failed."""
        try:
            if self._incompatible():
                return False  # a per-step table's rows are the host's own: left alone
            self.db.run("cleanup_checkpoints", {"task_id": task_id}, fetch="none")
            return True
        except Exception as exc:
            emit(logger, logging.WARNING, "[JrQueue] Failed to cleanup checkpoints for task %s: %s",
                 task_id, exc, action="cleanup_checkpoints_failed")
            return False


__all__ = ["QueueCheckpoints"]
