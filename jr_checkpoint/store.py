"""The step ledger: every SQL call the package makes at run time, on psycopg2.

A :class:`CheckpointStore` owns one lazily opened connection in autocommit mode, so each
statement is its own transaction and an error can never leave the connection in an aborted
transaction. Every operation is one statement, so one round trip, and none relies on session
state (no advisory lock, no ``PREPARE``): it works the same through PgBouncer in
transaction mode. The connection is shared between threads behind a lock, reopened after the
server dropped it, and never reused in a forked child.

**Who runs a task.** A worker takes a task's *lease* (``jr_checkpoint_begin``): a random
owner token and an expiry, kept in the checkpoint row's ``checkpoint_data``. Every record
checks the owner on the locked checkpoint row (``jr_checkpoint_record_step``), so a worker
that lost the task writes nothing and is told (:class:`TaskOwnershipLost`). A keeper thread
renews the leases this process holds, so a step may run for longer than the lease. A worker
that died gives its task up when its lease expires, or at once to a worker on the same host,
which can see that the owner's process is gone.

**Outages.** A dropped connection, however psycopg2 reports it, or a server that cannot
take the statement now (a full disk, a failover: :func:`jr_checkpoint.db.is_transient`), is
reopened and the statement sent again (each is idempotent) until ``outage`` seconds have
passed since the first failure; only then does the call fail with :class:`DatabaseUnavailable`.
Connections use libpq's dead-peer detection (keepalives, ``tcp_user_timeout``) unless the DSN
sets its own, so a silent network fails a statement within a third of a lease.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from . import db
from . import dsn as dsn_module
from .errors import DatabaseUnavailable, IncompatibleSchema, SchemaMissing, StoreError, TaskOwnershipLost
from .lease import LeaseKeeper, holder_identity, holder_is_dead
from .log import emit
from .shape import SEED, Shape, from_rows
from .sql import QUERIES

logger = logging.getLogger(__name__)

#: First key of the advisory lock that serializes migrations (transaction-scoped).
LOCK_NAMESPACE = 0x6A72636B  # "jrck"

#: How long a task stays taken after its owner last renewed it.
DEFAULT_LEASE = 30.0
#: How long a dropped connection is retried before the call goes on unchecked.
DEFAULT_OUTAGE = 10.0

MAX_TEXT_BYTES = 8 * 1024
_INT4_MAX = 2**31 - 1
_TRUNCATED = "\n...[truncated by jr-checkpoint]"


def bound_text(value: Any, limit: int = MAX_TEXT_BYTES) -> str | None:
    """Text PostgreSQL can store: NUL bytes escaped, at most ``limit`` UTF-8 bytes."""
    if value is None:
        return None
    if type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value:
        return value  # the common case: nothing to escape, cut or replace
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
    """What the ledger knows about a task when an attempt begins, and whose attempt it is.

    ``attempt`` counts the attempts of the unfinished task (the checkpoint's, for
    ``max_attempts``); ``number`` is this attempt's row in jr_task_attempts (all its history).
    ``lease_until`` is this process's monotonic clock reading when the lease surely ends.
    """

    attempt: int
    checkpoint: dict[str, Any] | None
    steps: dict[int, StepRecord] = field(default_factory=dict)
    owner: str | None = None
    number: int | None = None
    lease_until: float = math.inf


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, for its row in jr_task_attempts: step numbers it ran, skipped, failed."""

    outcome: str
    resumed_at: int | None = None
    ran: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()

    def params(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "resumed_at": self.resumed_at, "ran": list(self.ran),
                "skipped": list(self.skipped), "failed": list(self.failed)}


class CheckpointStore:
    """The PostgreSQL ledger behind ``@checkpointed_steps``.

    ``dsn`` is anything :func:`jr_checkpoint.dsn.resolve` takes; it is resolved at the first
    query, so constructing a store never touches the network. ``lease``: seconds a task stays
    taken without renewal; ``outage``: seconds a dropped connection is retried.
    """

    def __init__(
        self,
        dsn: Any = None,
        *,
        connect_timeout: float = dsn_module.DEFAULT_CONNECT_TIMEOUT,
        host_root: str | os.PathLike | None = None,
        lease: float = DEFAULT_LEASE,
        outage: float = DEFAULT_OUTAGE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        shape: Shape | None = None,
    ):
        if not lease > 0 or not outage >= 0:
            raise ValueError("lease must be > 0 and outage >= 0 seconds")
        self._dsn = dsn
        self._host_root = host_root
        self._target: dsn_module.Target | None = None
        self.connect_timeout = connect_timeout
        self.lease = float(lease)
        self._lease_text = repr(self.lease) if math.isfinite(self.lease) else None  # as SQL
        self.outage = float(outage)
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._orphans: list[Any] = []  # a parent's connections, kept so a child never closes them
        self._keeper: LeaseKeeper | None = None
        self.round_trips = 0
        self._shape = shape  # the live tables' (jr_checkpoint.shape), read before the first task
        # Owners of tasks taken with the previous release's functions (an unmigrated database),
        # and when this release's were last found missing.
        self._v1_owners: set[str] = set()
        self._v2_missing_since: float | None = None

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock this store measures outages and leases with."""
        return self._clock

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
            self._conn, self._keeper, self._pid = None, None, os.getpid()
        if self._conn is None or self._conn.closed:
            self._conn = None
            conn = self.target.connect(self.connect_timeout, **self._connection_defaults())
            conn.autocommit = True
            self._conn = conn
        return self._conn

    def _connection_defaults(self) -> dict[str, Any]:
        """What this store's connections get unless the DSN says otherwise: a name for
        pg_stat_activity, and libpq's dead-peer detection bounded by a third of the lease, so
        that a silent network (a partition, a dead host) fails a statement well before the
        lease could run out under it, instead of after the kernel's ~15 minutes."""
        bound = self.lease / 3 if math.isfinite(self.lease) else 10.0
        defaults: dict[str, Any] = {
            "application_name": f"jr-checkpoint pid {os.getpid()}",
            "keepalives": 1,
            "keepalives_idle": max(1, int(bound / 2)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": max(1000, int(bound * 1000)),
        }
        return {key: value for key, value in defaults.items() if key not in self.target.params}

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.close()
            except Exception:  # already broken
                pass

    def close(self) -> None:
        with self._lock:
            keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()
        with self._lock:
            if self._pid == os.getpid():
                self._drop_connection()
            self._conn = None

    def _translate(self, exc: BaseException, name: str) -> Exception:
        """Database errors become the package's in one place: :func:`jr_checkpoint.db.translate`."""
        if isinstance(exc, DatabaseUnavailable):
            return exc
        return db.translate(exc, self.target, name)

    def _run(self, name: str, params: Mapping[str, Any] | tuple | None = None, fetch: str = "one",
             *, patient: bool = False, sql: str | None = None):
        """Send one named statement. A worker's statements are ``patient``: while the connection
        keeps dropping, it is reopened and the statement sent again, for up to ``outage``
        seconds. Others (the command line's) try once. ``sql``: the text, when it is not
        ``QUERIES[name]`` as it stands."""
        text = QUERIES[name] if sql is None else sql
        deadline = None  # the outage clock runs from the first failure
        delay, tries = 0.05, 0
        while True:
            tries += 1
            with self._lock:
                stale = self.connected  # a connection from before may have died since
                try:
                    conn = self._connection()
                    with conn.cursor() as cur:
                        self.round_trips += 1
                        cur.execute(text, params)
                        if fetch == "one":
                            return cur.fetchone()
                        if fetch == "all":
                            return cur.fetchall()
                        return cur.rowcount
                except (psycopg2.Error, DatabaseUnavailable) as exc:
                    error = self._translate(exc, name)
                    if not isinstance(error, DatabaseUnavailable):
                        raise error from error.__cause__
                    self._drop_connection()
                    if deadline is None:
                        deadline = self._clock() + self.outage
                except ValueError as exc:  # psycopg2 refuses some values (NUL bytes) before sending
                    raise StoreError(f"{name} failed: {dsn_module.first_line(exc)}") from None
            if not patient:
                if stale and tries == 1:
                    continue  # the server dropped an idle connection: one fresh try
                raise error from error.__cause__
            if self._clock() >= deadline:
                raise error from error.__cause__
            logger.info("checkpoint connection lost (%s); trying again", error,
                        extra={"action": "reconnecting"})
            self._sleep(min(delay, max(0.0, deadline - self._clock())))
            delay = min(delay * 2, 0.5)

    # -- who runs a task ----------------------------------------------------------------------

    def shape(self) -> Shape:
        """The live tables' shape: read once, at the first task (one query), then kept. While
        the tables are missing it is read again each time (``migrate`` may have run since)."""
        shape = self._shape
        if shape is None:
            shape = from_rows(self._run("live_shape", fetch="all", patient=True))
            if shape.found:
                self._shape = shape
                if not shape.writable:
                    emit(logger, logging.WARNING, "[CHECKPOINT] %s; every task runs unchecked",
                         shape.incompatibility(), action="schema_incompatible")
        return shape

    def begin_task(self, task_id: int, total_steps: int | None = None, *,
                   wait: float | None = 0.0) -> TaskState | None:
        """Take the task, count the attempt and load everything recorded for it.

        Waits up to ``wait`` seconds (``None``: for ever) while a live owner holds it, and
        returns None if it still does. Takes it at once from an owner on this host whose
        process has died.
        """
        shape = self._shape or self.shape()
        if shape.found and not shape.writable:
            raise IncompatibleSchema(shape.incompatibility())
        owner = uuid.uuid4().hex
        holder = json.dumps(holder_identity())
        deadline = None if wait is None else self._clock() + wait
        delay, takeover = 0.02, owner
        while True:
            sent = self._clock()
            params = {"task_id": task_id, "total_steps": total_steps, "owner": owner,
                      "lease": self.lease, "holder": holder, "takeover": takeover}
            answer = self._begin(params)
            if answer["taken"]:
                # The server computed lease_until from its clock after we sent the call: by
                # ours, the lease lasts at least until `sent + lease`.
                return self._state(answer, owner, sent + self.lease)
            current = answer.get("holder") or {}
            if holder_is_dead(current.get("holder")) and current.get("owner") != takeover:
                emit(logger, logging.WARNING, "[CHECKPOINT] task %s: its owner (pid %s) died; taking it over",
                     task_id, current["holder"].get("pid"), action="task_taken_over", task_id=task_id)
                takeover = current.get("owner")
                continue
            if deadline is not None and self._clock() >= deadline:
                return None
            pause = delay if deadline is None else min(delay, max(0.0, deadline - self._clock()))
            self._sleep(pause)
            delay = min(delay * 2, 0.5)

    #: While this release's functions are missing, look for them again this often (seconds).
    RECHECK_SCHEMA = 60.0

    def _begin(self, params: dict[str, Any]) -> dict[str, Any]:
        """begin_task with this release's functions, else the previous release's: a worker
        restarted before `jr-checkpoint migrate` ran keeps working as the previous release did."""
        missing = self._v2_missing_since
        if missing is None or self._clock() - missing >= self.RECHECK_SCHEMA:
            try:
                (answer,) = self._run("begin_task", params, patient=True)
                self._v2_missing_since = None
                return answer
            except SchemaMissing as exc:
                try:
                    (answer,) = self._run("begin_task_v1", params, patient=True)
                except SchemaMissing:
                    raise exc from None
                if missing is None:
                    emit(logger, logging.WARNING,
                         "[CHECKPOINT] the database has only the previous release's checkpoint "
                         "functions: run `jr-checkpoint migrate`; working with them until then",
                         action="schema_outdated")
                self._v2_missing_since = self._clock()
        else:
            (answer,) = self._run("begin_task_v1", params, patient=True)
        if answer["taken"]:
            self._v1_owners.add(params["owner"])
        return answer

    @staticmethod
    def _state(answer: Mapping[str, Any], owner: str, lease_until: float) -> TaskState:
        checkpoint = answer.get("checkpoint") or {}
        records = {row[0]: StepRecord(*row) for row in answer.get("steps") or ()}
        data = checkpoint.get("checkpoint_data") or {}
        attempt = data.get("attempts") if isinstance(data, dict) else None
        number = answer.get("attempt")
        return TaskState(attempt if isinstance(attempt, int) else 1, checkpoint, records, owner,
                         number if isinstance(number, int) else None, lease_until)

    def release_task(self, task_id: int, owner: str, *, completed: bool, exhausted: bool = False,
                     end: AttemptEnd | None = None, patient: bool = True) -> str:
        """End the attempt and give the task up: ``'released'`` when ``completed`` dropped its
        checkpoint row, ``'kept'`` (for the next attempt; marked so when ``exhausted``), or
        ``'lost'`` when another worker had taken it over."""
        self.forget_lease(task_id, owner)
        end = end or AttemptEnd("finished" if completed else "exhausted" if exhausted else "failed")
        v1 = owner in self._v1_owners
        (answer,) = self._run("release_task_v1" if v1 else "release_task", {
            "task_id": task_id, "owner": owner, "completed": completed, "exhausted": exhausted,
            **end.params()}, patient=patient)
        self._v1_owners.discard(owner)
        return answer

    def note_unchecked(self, task_id: int, ran: tuple[int, ...], failed: tuple[int, ...]) -> None:
        """Note a call that ran without the lease (the server was down when it began)."""
        shape = self._shape
        if self._v2_missing_since is not None or (shape is not None and not shape.writable):
            return  # no attempt ledger before `jr-checkpoint migrate`, or tables not to write into
        self._run("note_unchecked", {"task_id": task_id, "holder": json.dumps(holder_identity()),
                                     "ran": list(ran), "failed": list(failed)})

    def renew(self, task_id: int, owner: str) -> bool:
        """Push the lease's expiry back; False when another worker took the task from ``owner``."""
        name = "renew_lease_v1" if owner in self._v1_owners else "renew_lease"
        (answer,) = self._run(name, {"task_id": task_id, "owner": owner, "lease": self.lease})
        return answer != "lost"

    def hold(self, task_id: int, owner: str, lease_until: float = math.inf) -> None:
        """Keep renewing this lease in the background until :meth:`forget_lease`;
        ``lease_until``: when it surely ends by this process's clock, until renewed."""
        with self._lock:
            if self._keeper is None:
                self._keeper = LeaseKeeper(self)
            keeper = self._keeper
        keeper.add(task_id, owner, lease_until)

    def lease_until(self, task_id: int, owner: str) -> float:
        """When, by this process's monotonic clock, the lease last renewed surely ends."""
        keeper = self._keeper
        return keeper.until(task_id, owner) if keeper is not None else -math.inf

    def forget_lease(self, task_id: int, owner: str) -> None:
        keeper = self._keeper
        if keeper is not None:
            keeper.remove(task_id, owner)

    def lost(self, task_id: int, owner: str) -> bool:
        """True when a renewal found that another worker owns the task now."""
        keeper = self._keeper
        return keeper is not None and keeper.is_lost(task_id, owner)

    # -- the ledger -------------------------------------------------------------------------

    def record_step(
        self,
        task_id: int,
        step_number: int,
        *,
        owner: str,
        execution_result: str,
        step_type: Any = "unknown",
        target_file: Any = "",
        content_hash: str | None = None,
        execution_time_ms: int | None = None,
        error_detail: Any = None,
        last_completed_step: int = -1,
        total_steps: int | None = None,
        end: AttemptEnd | None = None,
        patient: bool = True,
    ) -> None:
        """Record one step's outcome and move the checkpoint, in one statement, as ``owner``;
        with ``end``, the same statement then ends the attempt and releases the completed task.

        Raises :class:`TaskOwnershipLost` (and writes nothing) when ``owner`` lost the task.
        """
        shape = self._shape or SEED
        step_type, target_file, error_detail = shape.fit_step(step_type, target_file, error_detail)
        if execution_time_ms is not None:
            execution_time_ms = max(0, min(int(execution_time_ms), _INT4_MAX))
        v1 = owner in self._v1_owners
        if not v1 and (_int4(task_id) and _int4(step_number) and _int4(last_completed_step)
                and (total_steps is None or _int4(total_steps)) and self._lease_text):
            # The common case: the call's text, the plain values written in (see _argument).
            rest: list[str] = []
            text = (f"{_RECORD_HEAD}{task_id}, {_argument(owner, rest, bounded=False)}, "
                    f"{step_number}, {_argument(step_type, rest, shape.step_type_chars)}, "
                    f"{_argument(target_file, rest)}, {_argument(content_hash, rest, bounded=False)}, "
                    f"{_argument(execution_result, rest, bounded=False)}, "
                    f"{_number(execution_time_ms)}, {_argument(error_detail, rest)}, "
                    f"{last_completed_step}, {_number(total_steps)}, {self._lease_text}"
                    f"{_END_ARGUMENTS if end is not None else ''}{_RECORD_TAIL}")
            if end is not None:
                rest.extend((end.outcome, end.resumed_at, list(end.ran), list(end.skipped),
                             list(end.failed)))
            (recorded,) = self._run("record_step", tuple(rest) or None, patient=patient, sql=text)
        else:  # let the server refuse it, in its own words (the casts of record_step)
            (recorded,) = self._run("record_step_v1" if v1 else "record_step", {
                "task_id": task_id, "owner": owner, "step_number": step_number,
                "step_type": bound_text(step_type),
                "target_file": bound_text(target_file), "content_hash": content_hash,
                "execution_result": execution_result, "execution_time_ms": execution_time_ms,
                "error_detail": bound_text(error_detail), "last_completed_step": last_completed_step,
                "total_steps": total_steps, "lease": self.lease,
                **_end_params(end)}, patient=patient)
        if not recorded:
            raise TaskOwnershipLost(f"task {task_id}: another worker took it over; stopping")
        if end is not None:
            if v1:  # the previous release's functions end nothing by themselves
                self.release_task(task_id, owner, completed=True, end=end, patient=patient)
            self.forget_lease(task_id, owner)  # released with the record

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

    # -- the seed's Step 3 trio, same semantics (the queue client's methods call these) -----

    def _incompatible_checkpoints(self) -> bool:
        """True when jr_task_checkpoints exists in a shape the ledger must not write into."""
        shape = self._shape or self.shape()
        return shape.found and not shape.checkpoints_compatible

    def save_checkpoint(
        self,
        task_id: int,
        last_completed_step: int,
        total_steps: int | None = None,
        checkpoint_data: dict | None = None,
    ) -> bool:
        """Save a checkpoint for a task so it can resume on retry; False if it failed."""
        try:
            if self._incompatible_checkpoints():
                return False  # said once, when the shape was read
            self._run("save_checkpoint", {
                "task_id": task_id, "last_completed_step": last_completed_step,
                "total_steps": total_steps,
                "checkpoint_data": _json(checkpoint_data) if checkpoint_data else None,
            }, fetch="none")
            return True
        except Exception as exc:
            emit(logger, logging.WARNING, "[JrQueue] Failed to save checkpoint for task %s: %s",
                 task_id, exc, action="save_checkpoint_failed")
            return False

    def get_last_checkpoint(self, task_id: int) -> dict | None:
        """The task's last checkpoint (last_completed_step, total_steps, checkpoint_data)."""
        try:
            row = self._run("get_last_checkpoint", {"task_id": task_id})
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
            if self._incompatible_checkpoints():
                return False  # a per-step table's rows are the host's own: left alone
            self._run("cleanup_checkpoints", {"task_id": task_id}, fetch="none")
            return True
        except Exception as exc:
            emit(logger, logging.WARNING, "[JrQueue] Failed to cleanup checkpoints for task %s: %s",
                 task_id, exc, action="cleanup_checkpoints_failed")
            return False


# record_step_checked without its comments (which may hold a %), around its arguments.
_RECORD_HEAD, _RECORD_TAIL = "\n".join(
    line for line in QUERIES["record_step_checked"].splitlines() if not line.startswith("--")
).split("{values}")


_END_ARGUMENTS = ", %s, %s, %s::integer[], %s::integer[], %s::integer[]"


def _end_params(end: AttemptEnd | None) -> dict[str, Any]:
    if end is None:
        return {"end_outcome": None, "resumed_at": None, "ran": None, "skipped": None, "failed": None}
    return {"end_outcome": end.outcome, **{k: v for k, v in end.params().items() if k != "outcome"}}


def _int4(value: Any) -> bool:
    """True for a Python int that fits PostgreSQL's INTEGER (not a bool, a float, a string)."""
    return type(value) is int and -_INT4_MAX - 1 <= value <= _INT4_MAX


def _number(value: int | None) -> str:
    return "NULL" if value is None else str(value)


def _plain(text: str) -> bool:
    """Its own SQL literal between quotes: printable ASCII, no quote, no backslash (whatever
    standard_conforming_strings says), no % (psycopg2's placeholders)."""
    return (text.isascii() and text.isprintable() and "'" not in text and "\\" not in text
            and "%" not in text)


def _argument(value: Any, rest: list, chars: int | None = None, bounded: bool = True) -> str:
    """A text argument of record_step, ``bounded`` (``bound_text``, then at most ``chars``
    characters): written in when it is plain, else a placeholder, its value appended to
    ``rest``. psycopg2 quotes a parameter in ~1.5 us, and most of a step's values are plain."""
    if value is None:
        return "NULL"
    if type(value) is not str or len(value) > (chars or MAX_TEXT_BYTES) or not _plain(value):
        if bounded:
            value = bound_text(value)[:chars]
        if type(value) is not str or not _plain(value):
            rest.append(value)
            return "%s"
    return f"'{value}'"


def _json(value: Mapping[str, Any] | None) -> str | None:
    """The one JSON encoding of checkpoint_data (sorted keys when they sort)."""
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except TypeError:  # keys of mixed types
        return json.dumps(value, separators=(",", ":"), default=str)


__all__ = [
    "AttemptEnd",
    "DEFAULT_LEASE",
    "DEFAULT_OUTAGE",
    "CheckpointStore",
    "LOCK_NAMESPACE",
    "StepRecord",
    "TaskState",
    "bound_text",
    "holder_is_dead",
]
