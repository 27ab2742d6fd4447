"""The public store: :class:`CheckpointStore`, the pieces of the ledger behind one object.

- :mod:`jr_checkpoint.db`: the connection (opened lazily, reopened after the server dropped
  it, never reused in a forked child) and every statement, retried across an outage;
- :mod:`jr_checkpoint.lease`: who runs a task (take, renew, hold, give up);
- :mod:`jr_checkpoint.ledger`: a step's record, a task's records, an attempt's end;
- :mod:`jr_checkpoint.queue_client`: the seed's three queue-client methods.

**Outages.** A dropped connection, however psycopg2 reports it, or a server that cannot
take the statement now (a full disk, a failover: :func:`jr_checkpoint.db.is_transient`), is
reopened and the statement sent again (each is idempotent) until ``outage`` seconds have
passed since the first failure; only then does the call fail with :class:`DatabaseUnavailable`.
Connections use libpq's dead-peer detection (keepalives, ``tcp_user_timeout``) bounded by a
third of the lease unless the DSN sets its own, so a silent network fails a statement in time.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

from . import dsn as dsn_module
from .db import Connector
from .lease import DEFAULT_LEASE, Leases, holder_identity, holder_is_dead
from .ledger import MAX_TEXT_BYTES, AttemptEnd, StepLedger, StepRecord, TaskState, bound_text
from .queue_client import QueueCheckpoints
from .shape import SEED, Shape

#: How long a dropped connection is retried before the call goes on unchecked.
DEFAULT_OUTAGE = 10.0


class CheckpointStore:
    """The PostgreSQL ledger behind ``@checkpointed_steps``.

    ``dsn`` is anything :func:`jr_checkpoint.dsn.resolve` takes; it is resolved at the first
    query, so constructing a store never touches the network. ``lease``: seconds a task stays
    taken without renewal; ``outage``: seconds a dropped connection is retried; ``shape``: the
    live tables' (read before the first task when not given).
    """

    def __init__(
        self,
        dsn: dsn_module.Dsn = None,
        *,
        connect_timeout: float | None = dsn_module.DEFAULT_CONNECT_TIMEOUT,
        host_root: str | os.PathLike[str] | None = None,
        lease: float = DEFAULT_LEASE,
        outage: float = DEFAULT_OUTAGE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        shape: Shape | None = None,
    ):
        if not lease > 0 or not outage >= 0:
            raise ValueError("lease must be > 0 and outage >= 0 seconds")
        self.lease = float(lease)
        self.outage = float(outage)
        self.connector = Connector(lambda: dsn_module.resolve(dsn, host_root=host_root),
                                   connect_timeout=connect_timeout, outage=outage,
                                   dead_peer=self.lease / 3, sleep=sleep, clock=clock)
        self.leases = Leases(self.connector, lease=self.lease, shape=shape)
        self.ledger = StepLedger(self.connector, self.lease)
        self.queue = QueueCheckpoints(self.connector, self.shape)

    # -- the connection ---------------------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock this store measures outages and leases with."""
        return self.connector.clock

    @property
    def connect_timeout(self) -> float | None:
        return self.connector.connect_timeout

    @property
    def target(self) -> dsn_module.Target:
        return self.connector.target  # type: ignore[return-value]  # dsn.resolve's Target

    @property
    def connected(self) -> bool:
        """True while this store holds an open connection."""
        return self.connector.connected

    @property
    def round_trips(self) -> int:
        """Statements sent so far (each one round trip)."""
        return self.connector.round_trips

    def close(self) -> None:
        """Stop the lease keeper and close the connection; the store opens a new one if used again."""
        self.leases.close()
        self.connector.close()

    # -- who runs a task (jr_checkpoint.lease) ------------------------------------------------

    def shape(self) -> Shape:
        """The live tables' shape, read once at the first task (see :meth:`Leases.shape`)."""
        return self.leases.shape()

    def begin_task(self, task_id: int, total_steps: int | None = None, *,
                   wait: float | None = 0.0) -> TaskState | None:
        """Take the task, count the attempt and load everything recorded for it; None when a
        live owner still holds it after ``wait`` seconds (``None``: wait for ever)."""
        return self.leases.begin_task(task_id, total_steps, wait=wait)

    def release_task(self, task_id: int, owner: str, *, completed: bool, exhausted: bool = False,
                     end: AttemptEnd | None = None, patient: bool = True) -> str:
        """End the attempt and give the task up: ``'released'``, ``'kept'`` or ``'lost'``."""
        return self.leases.release_task(task_id, owner, completed=completed, exhausted=exhausted,
                                        end=end, patient=patient)

    def renew(self, task_id: int, owner: str) -> bool:
        """Push the lease's expiry back; False when another worker took the task from ``owner``."""
        return self.leases.renew(task_id, owner)

    def hold(self, task_id: int, owner: str, lease_until: float = math.inf) -> None:
        """Keep renewing this lease in the background until :meth:`forget_lease`."""
        self.leases.hold(task_id, owner, lease_until)

    def lease_until(self, task_id: int, owner: str) -> float:
        """When, by this process's monotonic clock, the lease last renewed surely ends."""
        return self.leases.lease_until(task_id, owner)

    def forget_lease(self, task_id: int, owner: str) -> None:
        self.leases.forget_lease(task_id, owner)

    def lost(self, task_id: int, owner: str) -> bool:
        """True when a renewal found that another worker owns the task now."""
        return self.leases.lost(task_id, owner)

    # -- the step ledger (jr_checkpoint.ledger) -------------------------------------------------

    def record_step(self, task_id: int, step_number: int, *, owner: str, execution_result: str,
                    end: AttemptEnd | None = None, patient: bool = True, **record: Any) -> None:
        """Record one step's outcome and move the checkpoint, in one statement, as ``owner``;
        with ``end``, the same statement then ends the attempt and releases the completed task.
        ``record``: step_type, target_file, content_hash, execution_time_ms, error_detail,
        last_completed_step, total_steps (see :meth:`StepLedger.record_step`).

        Raises :class:`TaskOwnershipLost` (and writes nothing) when ``owner`` lost the task.
        """
        leases = self.leases
        v1 = leases.is_v1(owner)
        self.ledger.record_step(task_id, step_number, owner=owner, execution_result=execution_result,
                                shape=leases.known_shape or SEED, v1=v1,
                                end=None if v1 else end, patient=patient, **record)
        if end is not None:
            if v1:  # the previous release's functions end nothing by themselves
                leases.release_task(task_id, owner, completed=True, end=end, patient=patient)
            else:
                leases.forget_lease(task_id, owner)  # released with the record

    def note_unchecked(self, task_id: int, ran: tuple[int, ...], failed: tuple[int, ...]) -> None:
        """Note a call that ran without the lease (the server was down when it began)."""
        shape = self.leases.known_shape
        if self.leases.schema_outdated or (shape is not None and not shape.writable):
            return  # no attempt ledger before `jr-checkpoint migrate`, or tables not to write into
        self.ledger.note_unchecked(task_id, json.dumps(holder_identity()), ran, failed)

    def load_task(self, task_id: int) -> dict[str, Any] | None:
        """Everything recorded for a task, in one query; None when nothing is."""
        return self.ledger.load_task(task_id)

    def forget_task(self, task_id: int) -> tuple[int, int]:
        """Delete a task's step rows and checkpoint (how many of each went): it runs again from scratch."""
        return self.ledger.forget_task(task_id)

    # -- the seed's Step 3 trio (jr_checkpoint.queue_client) ------------------------------------

    def save_checkpoint(self, task_id: int, last_completed_step: int, total_steps: int | None = None,
                        checkpoint_data: dict[str, Any] | None = None) -> bool:
        """Save a checkpoint for a task so it can resume on retry; False if it failed."""
        return self.queue.save_checkpoint(task_id, last_completed_step, total_steps, checkpoint_data)

    def get_last_checkpoint(self, task_id: int) -> dict[str, Any] | None:
        """The task's last checkpoint (last_completed_step, total_steps, checkpoint_data)."""
        return self.queue.get_last_checkpoint(task_id)

    def cleanup_checkpoints(self, task_id: int) -> bool:
        """Remove the task's checkpoint after it completed; False if it failed."""
        return self.queue.cleanup_checkpoints(task_id)


__all__ = [
    "AttemptEnd",
    "DEFAULT_LEASE",
    "DEFAULT_OUTAGE",
    "MAX_TEXT_BYTES",
    "CheckpointStore",
    "StepRecord",
    "TaskState",
    "bound_text",
    "holder_is_dead",
]
