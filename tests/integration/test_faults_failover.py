"""Failover: the primary SIGKILLed mid-run (the postmaster and every backend), its synchronous
standby promoted; the workers reach the new primary through a multi-host DSN with
``target_session_attrs=read-write``. Checked: every task finishes, no record is lost, no step
ran twice (nor two workers in one task at once), no traceback.
"""

from __future__ import annotations

import os
import shutil
import signal

import psutil
import psycopg2.extensions
import pytest

from tests.integration import faults
from tests.waiting import wait_until

TASKS = {task: 6 for task in range(1, 17)}
LEASE, OUTAGE = 4.0, 10.0


@pytest.fixture
def pair():
    with faults.cluster() as primary:
        directory = faults.scratch_dir("jr-fault-standby-")
        standby = faults.Cluster(directory)
        try:
            standby.prepare()
            primary.run("pg_basebackup", "-D", str(standby.pgdata), "-h", str(primary.sockets),
                        "-p", str(primary.port), "-U", "postgres", "-R", "-X", "stream")
            standby.configure({"synchronous_standby_names": "''"})  # -R wrote primary_conninfo
            standby.start()
            faults.query(primary.dsn(), "ALTER SYSTEM SET synchronous_standby_names = '*'")
            faults.query(primary.dsn(), "SELECT pg_reload_conf()")
            wait_until(lambda: faults.query(primary.dsn(), "SELECT count(*) FROM pg_stat_replication "
                                                           "WHERE sync_state = 'sync'") == [(1,)],
                       30, "the standby to be synchronous")
            yield primary, standby
        finally:
            standby.cleanup()
            shutil.rmtree(directory, ignore_errors=True)


def kill_server(server: faults.Cluster) -> None:
    postmaster = psutil.Process(server.pid())
    for process in [postmaster, *postmaster.children(recursive=True)]:
        os.kill(process.pid, signal.SIGKILL)


def test_a_promoted_standby_takes_over_and_no_step_runs_twice(pair):
    primary, standby = pair
    dsn = psycopg2.extensions.make_dsn(
        host=f"{primary.sockets},{standby.sockets}", port=f"{primary.port},{standby.port}",
        user="postgres", dbname="postgres", target_session_attrs="read-write")
    with faults.workers(TASKS) as fleet:
        for name in ("A", "B", "C"):
            fleet.spawn(name, dsn, lease=LEASE, outage=OUTAGE, step_ms=40)
        wait_until(lambda: len(fleet.events(what="end")) >= 15, 30, "the run to get going")
        kill_server(primary)
        standby.run("pg_ctl", "-w", "-t", "30", "-D", str(standby.pgdata), "promote")
        for name in ("A", "B", "C"):
            assert fleet.wait_exit(name, timeout=50) == 0, fleet.stderr(name)
        faults.no_tracebacks(fleet)
        events = fleet.events()
    assert faults.concurrent_runs(events) == []
    starts: dict[tuple, int] = {}
    for event in events:
        if event.what == "start":
            starts[(event.task, event.step)] = starts.get((event.task, event.step), 0) + 1
    assert {k: n for k, n in starts.items() if n > 1} == {}, "steps that ran twice"
    faults.check_ledger(standby.dsn(), TASKS)
