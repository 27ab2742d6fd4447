"""Who runs a task: the lease protocol.

A worker takes a task's *lease* (``jr_checkpoint_begin``): a random owner token and an
expiry, kept in the checkpoint row's ``checkpoint_data``, and the holder's host and process.
Every record checks the owner (:mod:`jr_checkpoint.ledger`). A keeper thread renews the
leases this process holds, so a step may run for longer than the lease. A worker that died
gives its task up when its lease expires, or at once to a worker on the same host, which can
see that the owner's process is gone. Giving the task up (``jr_checkpoint_end``) ends the
attempt.

A database that has only the previous release's functions (``jr-checkpoint migrate`` not run
yet) is worked with through them: :class:`Leases` remembers which owners took their task so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .db import Connector
from .errors import IncompatibleSchema, SchemaMissing
from .ledger import AttemptEnd, StepRecord, TaskState
from .log import emit
from .shape import Shape, from_rows

logger = logging.getLogger(__name__)

#: How long a task stays taken after its owner last renewed it.
DEFAULT_LEASE = 30.0


def process_identity(pid: int) -> str | None:
    """boot id + PID namespace + start time of ``pid`` as this process sees it (Linux): unique
    across pid reuse; None elsewhere. The namespace is this process's own: a pid names a
    process only within one PID namespace (another's namespace is not ours to read)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
        start = stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after "comm"
        return f"{boot}:{namespace}:{start}"
    except (OSError, IndexError):
        return None


_own_identity: tuple[int, str | None] = (-1, None)  # (pid, its process_identity): read once a process


def holder_identity() -> dict[str, Any]:
    """Who takes a task: this host and process (read once a process, not at each task)."""
    global _own_identity
    pid = os.getpid()
    if _own_identity[0] != pid:
        _own_identity = (pid, process_identity(pid))
    return {"host": socket.gethostname(), "pid": pid, "proc": _own_identity[1]}


def holder_is_dead(holder: Any) -> bool:
    """True only when ``holder`` ran on this host and its process no longer exists.

    "This host" is the same host name, kernel boot and PID namespace: a machine or a
    container that shares only the host name (clones, containers on the host's UTS
    namespace) has pids that mean nothing here, so its holder is never judged dead.
    """
    if not isinstance(holder, Mapping) or holder.get("host") != socket.gethostname():
        return False
    pid, proc, mine = holder.get("pid"), holder.get("proc"), process_identity(os.getpid())
    if not isinstance(pid, int) or not isinstance(proc, str) or mine is None:
        return False  # cannot tell here
    if proc.rpartition(":")[0] != mine.rpartition(":")[0]:
        return False  # another boot or another PID namespace: cannot tell
    return process_identity(pid) != proc


class LeaseKeeper:
    """One daemon thread per :class:`Leases`: renews the leases it holds every third of a lease.

    For each lease it keeps whether a renewal found it lost, and until when, by this process's
    monotonic clock, the last successful renewal surely keeps it: the send time of that
    renewal plus the lease (the server counts from a later moment). A worker asks before each
    step; past that time, with no renewal since, the task may already be another worker's.
    """

    def __init__(self, store: Leases):
        self.store = store
        self.leases: dict[tuple[int, str], list[Any]] = {}  # (task, owner) -> [lost, until]
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="jr-checkpoint-lease", daemon=True)
        self.thread.start()

    def add(self, task_id: int, owner: str, until: float = math.inf) -> None:
        with self.lock:
            self.leases[(task_id, owner)] = [False, until]

    def remove(self, task_id: int, owner: str) -> None:
        with self.lock:
            self.leases.pop((task_id, owner), None)

    def is_lost(self, task_id: int, owner: str) -> bool:
        # Asked before every step: one dict read, atomic under the GIL, needs no lock.
        lease = self.leases.get((task_id, owner))
        return lease is not None and lease[0]

    def until(self, task_id: int, owner: str) -> float:
        lease = self.leases.get((task_id, owner))
        return lease[1] if lease is not None else -math.inf

    def stop(self) -> None:
        self.wake.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    def _loop(self) -> None:
        clock = self.store.clock
        while not self.wake.wait(self.store.lease / 3):
            with self.lock:
                held = [key for key, (lost, _) in self.leases.items() if not lost]
            for task_id, owner in held:
                sent = clock()
                try:
                    kept = self.store.renew(task_id, owner)
                except Exception:  # down for now: the next tick tries again; `until` stays
                    continue
                with self.lock:
                    lease = self.leases.get((task_id, owner))
                    if lease is not None:
                        if kept:
                            lease[1] = max(lease[1], sent + self.store.lease)
                        else:
                            lease[0] = True
        self.wake.clear()


class Leases:
    """The lease protocol on a :class:`~jr_checkpoint.db.Connector`: take a task (and load its
    records), renew, hold in the background, give up; and the live tables' shape, read before
    the first task."""

    #: While this release's functions are missing, look for them again this often (seconds).
    RECHECK_SCHEMA = 60.0

    def __init__(self, connector: Connector, *, lease: float = DEFAULT_LEASE, shape: Shape | None = None):
        self.db = connector
        self.lease = float(lease)
        self.known_shape = shape  # the live tables' (jr_checkpoint.shape), once read
        self._keeper: LeaseKeeper | None = None
        # Owners of tasks taken with the previous release's functions (an unmigrated database),
        # and when this release's were last found missing.
        self._v1_owners: set[str] = set()
        self._v2_missing_since: float | None = None
        connector.after_fork.append(self._forget_all)

    @property
    def clock(self) -> Callable[[], float]:
        return self.db.clock

    def is_v1(self, owner: str) -> bool:
        """True when ``owner`` took its task with the previous release's functions."""
        return owner in self._v1_owners

    @property
    def schema_outdated(self) -> bool:
        """True while this release's functions were found missing (no attempt ledger yet)."""
        return self._v2_missing_since is not None

    def shape(self) -> Shape:
        """The live tables' shape: read once, at the first task (one query), then kept. While
        the tables are missing it is read again each time (``migrate`` may have run since)."""
        shape = self.known_shape
        if shape is None:
            shape = from_rows(self.db.run("live_shape", fetch="all", patient=True))
            if shape.found:
                self.known_shape = shape
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
        shape = self.known_shape or self.shape()
        if shape.found and not shape.writable:
            raise IncompatibleSchema(shape.incompatibility())
        clock = self.db.clock
        owner = uuid.uuid4().hex
        holder = json.dumps(holder_identity())
        deadline = None if wait is None else clock() + wait
        delay = 0.02
        takeover: str | None = owner
        while True:
            sent = clock()
            params = {"task_id": task_id, "total_steps": total_steps, "owner": owner,
                      "lease": self.lease, "holder": holder, "takeover": takeover}
            answer = self._begin(params)
            if answer["taken"]:
                # The server computed lease_until from its clock after we sent the call: by
                # ours, the lease lasts at least until `sent + lease`.
                return _state(answer, owner, sent + self.lease)
            current = answer.get("holder") or {}
            if holder_is_dead(current.get("holder")) and current.get("owner") != takeover:
                emit(logger, logging.WARNING, "[CHECKPOINT] task %s: its owner (pid %s) died; taking it over",
                     task_id, current["holder"].get("pid"), action="task_taken_over", task_id=task_id)
                takeover = current.get("owner")
                continue
            if deadline is not None and clock() >= deadline:
                return None
            pause = delay if deadline is None else min(delay, max(0.0, deadline - clock()))
            self.db.sleep(pause)
            delay = min(delay * 2, 0.5)

    def _begin(self, params: dict[str, Any]) -> dict[str, Any]:
        """begin_task with this release's functions, else the previous release's: a worker
        restarted before `jr-checkpoint migrate` ran keeps working as the previous release did."""
        missing = self._v2_missing_since
        answer: dict[str, Any]
        if missing is None or self.db.clock() - missing >= self.RECHECK_SCHEMA:
            try:
                (answer,) = self.db.run("begin_task", params, patient=True)
                self._v2_missing_since = None
                return answer
            except SchemaMissing as exc:
                try:
                    (answer,) = self.db.run("begin_task_v1", params, patient=True)
                except SchemaMissing:
                    raise exc from None
                if missing is None:
                    emit(logger, logging.WARNING,
                         "[CHECKPOINT] the database has only the previous release's checkpoint "
                         "functions: run `jr-checkpoint migrate`; working with them until then",
                         action="schema_outdated")
                self._v2_missing_since = self.db.clock()
        else:
            (answer,) = self.db.run("begin_task_v1", params, patient=True)
        if answer["taken"]:
            self._v1_owners.add(params["owner"])
        return answer

    def release_task(self, task_id: int, owner: str, *, completed: bool, exhausted: bool = False,
                     end: AttemptEnd | None = None, patient: bool = True) -> str:
        """End the attempt and give the task up: ``'released'`` when ``completed`` dropped its
        checkpoint row, ``'kept'`` (for the next attempt; marked so when ``exhausted``), or
        ``'lost'`` when another worker had taken it over."""
        self.forget_lease(task_id, owner)
        end = end or AttemptEnd("finished" if completed else "exhausted" if exhausted else "failed")
        v1 = owner in self._v1_owners
        answer: str
        (answer,) = self.db.run("release_task_v1" if v1 else "release_task", {
            "task_id": task_id, "owner": owner, "completed": completed, "exhausted": exhausted,
            **end.params()}, patient=patient)
        self._v1_owners.discard(owner)
        return answer

    def renew(self, task_id: int, owner: str) -> bool:
        """Push the lease's expiry back; False when another worker took the task from ``owner``."""
        name = "renew_lease_v1" if owner in self._v1_owners else "renew_lease"
        answer: str
        (answer,) = self.db.run(name, {"task_id": task_id, "owner": owner, "lease": self.lease})
        return answer != "lost"

    def hold(self, task_id: int, owner: str, lease_until: float = math.inf) -> None:
        """Keep renewing this lease in the background until :meth:`forget_lease`;
        ``lease_until``: when it surely ends by this process's clock, until renewed."""
        with self.db.lock:
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

    @property
    def keeping(self) -> bool:
        """True while a keeper thread runs for these leases."""
        return self._keeper is not None

    def close(self) -> None:
        """Stop the keeper thread (the leases it held expire by themselves)."""
        with self.db.lock:
            keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()

    def _forget_all(self) -> None:
        """In a forked child: the parent's keeper and its leases are not the child's."""
        self._keeper = None


def _state(answer: Mapping[str, Any], owner: str, lease_until: float) -> TaskState:
    checkpoint = answer.get("checkpoint") or {}
    records = {row[0]: StepRecord(*row) for row in answer.get("steps") or ()}
    data = checkpoint.get("checkpoint_data") or {}
    attempt = data.get("attempts") if isinstance(data, dict) else None
    number = answer.get("attempt")
    return TaskState(attempt if isinstance(attempt, int) else 1, checkpoint, records, owner,
                     number if isinstance(number, int) else None, lease_until)


__all__ = ["DEFAULT_LEASE", "LeaseKeeper", "Leases", "holder_identity", "holder_is_dead", "process_identity"]
