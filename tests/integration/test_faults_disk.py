"""A full disk: the server's data directory on a small tmpfs, filled mid-run and freed again.

WAL lives on the ordinary disk (``initdb --waldir``), so the server does not PANIC: a write
that must extend a table or index fails with 53100 ``disk_full`` ("could not extend file ...:
No space left on device") while the server stays up. The tables are given a fillfactor of 10,
so that nearly every few rows need a new page and the fault bites every worker. The disk is
held full for longer than ``outage`` (after the server's log shows the first failure), then
freed. Checked: every task finishes with every step's row, no checkpoint row is left, no worker
prints a traceback, no two workers ran a task's steps at once.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time

import pytest

from tests.integration import faults
from tests.waiting import wait_until

TASKS = {task: 10 for task in range(1, 25)}
LEASE, OUTAGE = 4.0, 2.0
HELD = OUTAGE + 1.5  # seconds the disk stays full after the first failed write


@pytest.fixture
def small_disk():
    mount = faults.scratch_dir("jr-fault-disk-")
    entry = __import__("pwd").getpwnam(faults.PG_USER) if os.geteuid() == 0 else None
    owner = f",uid={entry.pw_uid},gid={entry.pw_gid}" if entry else ""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=96m,mode=0700{owner}", "tmpfs",
                           str(mount)], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test: {done.stderr.strip()}", pytrace=False)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)
        shutil.rmtree(mount, ignore_errors=True)


def fill(mount) -> os.PathLike:
    """A file that takes every free block: grown a megabyte, then a block, at a time until
    the file system says no (the server writes meanwhile, so the free space is a moving target)."""
    ballast = mount / "ballast"
    size = 0
    with open(ballast, "wb") as handle:
        for step in (1 << 20, os.statvfs(mount).f_frsize):
            while True:
                try:
                    os.posix_fallocate(handle.fileno(), size, step)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                size += step
    return ballast


def test_a_full_data_disk_loses_nothing_and_shows_no_traceback(small_disk):
    wal = faults.scratch_dir("jr-fault-wal-")
    faults.chown_to_server(wal)
    try:
        with faults.cluster(pgdata=small_disk / "data", initdb=("--waldir", str(wal / "pg_wal"))) as server:
            dsn = server.dsn()
            faults.query(dsn, "ALTER TABLE jr_step_rewards SET (fillfactor = 10); "
                              "ALTER TABLE jr_task_checkpoints SET (fillfactor = 10)")
            with faults.workers(TASKS) as fleet:
                for name in ("A", "B", "C"):
                    fleet.spawn(name, dsn, lease=LEASE, outage=OUTAGE, step_ms=40)
                wait_until(lambda: len(fleet.events(what="end")) >= 20, 30, "the run to get going")
                ballast = fill(small_disk)
                wait_until(lambda: "No space left on device" in server.log.read_text(errors="replace"),
                           20, "a write to fail with disk_full")
                full = time.monotonic()
                wait_until(lambda: time.monotonic() - full > HELD, 30, "the disk to stay full")
                os.unlink(ballast)
                for name in ("A", "B", "C"):
                    assert fleet.wait_exit(name, timeout=45) == 0, fleet.stderr(name)
                faults.no_tracebacks(fleet)
                assert faults.concurrent_runs(fleet.events()) == []
            assert "PANIC" not in server.log.read_text(errors="replace")
            faults.check_ledger(dsn, TASKS)
    finally:
        shutil.rmtree(wal, ignore_errors=True)
