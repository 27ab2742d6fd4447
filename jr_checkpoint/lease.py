"""Who may run a task: the owner's identity, and the thread that keeps its leases alive.

A lease (see :mod:`jr_checkpoint.store`) names its holder's host and process, so that a
worker on the same host can see that the holder died and take the task at once, instead of
waiting for the lease to expire. :class:`LeaseKeeper` renews the leases a store holds.
"""

from __future__ import annotations

import math
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any


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


def holder_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "proc": process_identity(pid)}


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
    """One daemon thread per store: renews the leases it holds every third of a lease.

    For each lease it keeps whether a renewal found it lost, and until when, by this process's
    monotonic clock, the last successful renewal surely keeps it: the send time of that
    renewal plus the lease (the server counts from a later moment). A worker asks before each
    step; past that time, with no renewal since, the task may already be another worker's.
    """

    def __init__(self, store: Any):
        self.store = store
        self.leases: dict[tuple[int, str], list] = {}  # (task, owner) -> [lost, until]
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


__all__ = ["LeaseKeeper", "holder_identity", "holder_is_dead", "process_identity"]
