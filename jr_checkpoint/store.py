"""The step ledger: every SQL call the package makes at run time, on psycopg2.

A :class:`CheckpointStore` owns one lazily opened connection in autocommit mode, so each
statement is its own transaction and an error can never leave the connection in an aborted
transaction. Every operation is one statement, so one round trip. The connection is shared
between threads behind a lock, reopened after the server dropped it, and never reused in a
forked child.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors

from . import dsn as dsn_module
from .errors import CheckpointError, DatabaseUnavailable, SchemaMissing, StoreError
from .sql import QUERIES, prepared

logger = logging.getLogger(__name__)

#: First key of every advisory lock this package takes; the second is the task id.
LOCK_NAMESPACE = 0x6A72636B  # "jrck"

MAX_TEXT_BYTES = 8 * 1024
_STEP_TYPE_CHARS = 50  # VARCHAR(50) in the seed's schema
_INT4_MAX = 2**31 - 1
_TRUNCATED = "\n...[truncated by jr-checkpoint]"

#: Statements sent once per step: parsed and planned once per connection, not once per step.
PREPARED = {name: prepared(QUERIES[name]) for name in ("record_step",)}


def bound_text(value: Any, limit: int = MAX_TEXT_BYTES) -> str | None:
    """Text PostgreSQL can store: NUL bytes escaped, at most ``limit`` UTF-8 bytes."""
    if value is None:
        return None
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
    """What the ledger knows about a task when an attempt begins."""

    attempt: int
    checkpoint: dict[str, Any] | None
    steps: dict[int, StepRecord] = field(default_factory=dict)


class CheckpointStore:
    """The PostgreSQL ledger behind ``@checkpointed_steps``.

    ``dsn`` is anything :func:`jr_checkpoint.dsn.resolve` takes; it is resolved at the first
    query, so constructing a store never touches the network.
    """

    def __init__(
        self,
        dsn: Any = None,
        *,
        connect_timeout: float = dsn_module.DEFAULT_CONNECT_TIMEOUT,
        host_root: str | os.PathLike | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._dsn = dsn
        self._host_root = host_root
        self._target: dsn_module.Target | None = None
        self.connect_timeout = connect_timeout
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._held: set[int] = set()  # tasks whose advisory lock this store holds
        self._orphans: list[Any] = []  # a parent's connections, kept so a child never closes them
        self._prepared: dict[str, str] = {}  # query name -> prepared statement on this connection
        self._prepare_count = 0
        self.round_trips = 0

    # -- connection -------------------------------------------------------------------------

    @property
    def target(self) -> dsn_module.Target:
        if self._target is None:
            self._target = dsn_module.resolve(self._dsn, host_root=self._host_root)
        return self._target

    def describe(self) -> str:
        return self.target.describe()

    @property
    def connected(self) -> bool:
        """True while this store holds an open connection."""
        return self._conn is not None and not self._conn.closed

    def _connection(self):
        if self._pid != os.getpid():
            # A forked child: closing the parent's socket would end the parent's session.
            if self._conn is not None:
                self._orphans.append(self._conn)
            self._conn, self._held, self._pid = None, set(), os.getpid()
        if self._conn is None or self._conn.closed:
            reopened = self._conn is not None
            conn = self.target.connect(self.connect_timeout)
            conn.autocommit = True
            self._conn = conn
            self._prepared.clear()
            if reopened and self._held:
                self._retake_locks()
        return self._conn

    def _retake_locks(self) -> None:
        """The server dropped our session and its advisory locks with it: take them back."""
        try:
            with self._conn.cursor() as cur:
                for task_id in sorted(self._held):
                    cur.execute(QUERIES["try_lock_task"], self._lock_params(task_id))
                    if not cur.fetchone()[0]:
                        logger.warning(
                            "lost the lock on task %s when the connection dropped; another worker holds it",
                            task_id,
                            extra={"action": "lock_lost", "task_id": task_id},
                        )
        except psycopg2.Error as exc:  # outside _run's handlers: translate here, never leak psycopg2
            raise DatabaseUnavailable(
                f"lost the connection to PostgreSQL at {self.describe()}: {dsn_module.first_line(exc)}"
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid() and not self._conn.closed:
                self._conn.close()
            self._conn = None
            self._held.clear()

    def _run(self, name: str, params: Mapping[str, Any] | None = None, fetch: str = "one"):
        """Send one named statement; reconnect once if the server had dropped the connection."""
        with self._lock:
            for retry in (False, True):
                had_connection = self._conn is not None and not self._conn.closed
                conn = self._connection()
                try:
                    with conn.cursor() as cur:
                        self.round_trips += 1
                        self._execute(cur, name, params)
                        if fetch == "one":
                            return cur.fetchone()
                        if fetch == "all":
                            return cur.fetchall()
                        return cur.rowcount
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    if conn.closed and had_connection and not retry:
                        logger.info("checkpoint connection was dropped; reconnecting")
                        continue
                    if conn.closed:
                        raise DatabaseUnavailable(
                            f"lost the connection to PostgreSQL at {self.describe()}: "
                            f"{dsn_module.first_line(exc)}"
                        ) from exc
                    raise StoreError(f"{name} failed: {dsn_module.first_line(exc)}") from exc
                except psycopg2.errors.UndefinedTable as exc:
                    raise SchemaMissing(
                        "the checkpoint tables do not exist at "
                        f"{self.describe()}: run `jr-checkpoint migrate`"
                    ) from exc
                except (psycopg2.Error, ValueError) as exc:
                    # ValueError: psycopg2 refuses some values (NUL bytes) before sending them.
                    raise StoreError(f"{name} failed: {dsn_module.first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _execute(self, cur: Any, name: str, params: Mapping[str, Any] | None) -> None:
        """Execute a named query; a prepared one is prepared in the same round trip, first time."""
        if name not in PREPARED:
            cur.execute(QUERIES[name], params)
            return
        body, arguments = PREPARED[name]
        handle = self._prepared.pop(name, None)  # put back only once it has worked
        if handle is not None:
            sql = f"EXECUTE {handle} ({arguments})"
        else:
            # PREPARE is not undone by a failed transaction: a fresh name after any failure
            # never collides with a statement that was prepared before the error.
            self._prepare_count += 1
            handle = f"jr_checkpoint_{name}_{self._prepare_count}"
            sql = f"PREPARE {handle} AS {body};\nEXECUTE {handle} ({arguments})"
        cur.execute(sql, params)
        self._prepared[name] = handle

    # -- task lock --------------------------------------------------------------------------

    @staticmethod
    def _lock_params(task_id: int) -> dict[str, int]:
        return {"namespace": LOCK_NAMESPACE, "task_id": task_id}

    def try_lock_task(self, task_id: int) -> bool:
        """Take the task's advisory lock if nobody, in this process or another, holds it."""
        with self._lock:
            if task_id in self._held:
                return False
            (locked,) = self._run("try_lock_task", self._lock_params(task_id))
            if locked:
                self._held.add(task_id)
            return bool(locked)

    def lock_task(self, task_id: int, timeout: float | None = 0) -> bool:
        """Take the task's lock, polling for up to ``timeout`` seconds (``None``: forever).

        Polling, not a blocking ``pg_advisory_lock``, keeps the shared connection free for
        other threads while this one waits.
        """
        deadline = None if timeout is None else self._clock() + timeout
        delay = 0.02
        while True:
            if self.try_lock_task(task_id):
                return True
            if deadline is not None and self._clock() >= deadline:
                return False
            pause = delay if deadline is None else min(delay, max(0.0, deadline - self._clock()))
            self._sleep(pause)
            delay = min(delay * 2, 0.5)

    def forget_lock(self, task_id: int) -> None:
        """Drop a lock that went with a dropped session, so this process may take it again."""
        with self._lock:
            self._held.discard(task_id)

    def finish_task(self, task_id: int, *, completed: bool) -> bool:
        """Release the task's lock; when ``completed``, also drop its checkpoint row.

        Returns True when a checkpoint row was removed.
        """
        with self._lock:
            try:
                _, removed = self._run(
                    "finish_task", {**self._lock_params(task_id), "completed": completed}
                )
            finally:
                self._held.discard(task_id)
            return bool(removed)

    # -- the ledger -------------------------------------------------------------------------

    def begin_attempt(self, task_id: int, total_steps: int | None = None) -> TaskState:
        """Count a new attempt and load everything recorded for the task, in one query."""
        checkpoint, steps = self._run(
            "begin_attempt", {"task_id": task_id, "total_steps": total_steps}
        )
        records = {
            row[0]: StepRecord(*row) for row in steps or ()
        }
        data = (checkpoint or {}).get("checkpoint_data") or {}
        attempt = data.get("attempts") if isinstance(data, dict) else None
        return TaskState(attempt if isinstance(attempt, int) else 1, checkpoint, records)

    def record_step(
        self,
        task_id: int,
        step_number: int,
        *,
        execution_result: str,
        step_type: Any = "unknown",
        target_file: Any = "",
        content_hash: str | None = None,
        execution_time_ms: int | None = None,
        error_detail: Any = None,
        last_completed_step: int = -1,
        total_steps: int | None = None,
        checkpoint_data: Mapping[str, Any] | None = None,
    ) -> None:
        """Upsert one step's outcome and move the task's checkpoint, in one statement."""
        if execution_time_ms is not None:
            execution_time_ms = max(0, min(int(execution_time_ms), _INT4_MAX))
        step_type = bound_text(step_type)
        self._run(
            "record_step",
            {
                "task_id": task_id,
                "step_number": step_number,
                "step_type": step_type[:_STEP_TYPE_CHARS] if step_type is not None else None,
                "target_file": bound_text(target_file),
                "content_hash": content_hash,
                "execution_result": execution_result,
                "execution_time_ms": execution_time_ms,
                "error_detail": bound_text(error_detail),
                "last_completed_step": last_completed_step,
                "total_steps": total_steps,
                "checkpoint_data": _json(checkpoint_data),
            },
            fetch="none",
        )

    def load_task(self, task_id: int) -> dict[str, Any] | None:
        """Everything recorded for a task, in one query; None when nothing is."""
        checkpoint, steps = self._run("load_task", {"task_id": task_id})
        if checkpoint is None and not steps:
            return None
        return {"task_id": task_id, "checkpoint": checkpoint, "steps": steps or []}

    def forget_task(self, task_id: int) -> tuple[int, int]:
        """Delete a task's step rows and checkpoint so it runs again from scratch.

        Returns how many step rows and checkpoint rows went.
        """
        steps, checkpoints = self._run("forget_task", {"task_id": task_id})
        return int(steps), int(checkpoints)

    # -- the seed's Step 3 trio, same semantics -----------------------------------------------

    def save_checkpoint(
        self,
        task_id: int,
        last_completed_step: int,
        total_steps: int | None = None,
        checkpoint_data: dict | None = None,
    ) -> bool:
        """Save a checkpoint for a task so it can resume on retry; False if it failed."""
        try:
            self._run(
                "save_checkpoint",
                {
                    "task_id": task_id,
                    "last_completed_step": last_completed_step,
                    "total_steps": total_steps,
                    "checkpoint_data": _json(checkpoint_data) if checkpoint_data else None,
                },
                fetch="none",
            )
            return True
        except CheckpointError as exc:
            logger.warning("[JrQueue] Failed to save checkpoint for task %s: %s", task_id, exc)
            return False

    def get_last_checkpoint(self, task_id: int) -> dict | None:
        """The task's last checkpoint (last_completed_step, total_steps, checkpoint_data)."""
        try:
            row = self._run("get_last_checkpoint", {"task_id": task_id})
        except CheckpointError as exc:
            logger.warning("[JrQueue] Failed to get checkpoint for task %s: %s", task_id, exc)
            return None
        if row is None:
            return None
        return dict(zip(("last_completed_step", "total_steps", "checkpoint_data"), row, strict=True))

    def cleanup_checkpoints(self, task_id: int) -> bool:
        """Remove the task's checkpoint after it completed; False if it failed."""
        try:
            self._run("cleanup_checkpoints", {"task_id": task_id}, fetch="none")
            return True
        except CheckpointError as exc:
            logger.warning("[JrQueue] Failed to cleanup checkpoints for task %s: %s", task_id, exc)
            return False


def _json(value: Mapping[str, Any] | None) -> str | None:
    """The one JSON encoding of checkpoint_data (sorted keys when they sort)."""
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except TypeError:  # keys of mixed types
        return json.dumps(value, separators=(",", ":"), default=str)


__all__ = [
    "CheckpointStore",
    "LOCK_NAMESPACE",
    "StepRecord",
    "TaskState",
    "bound_text",
]
