"""Rolling upgrade: workers of the previous release (the package at commit 91181ef) and of this
one share a server while ``migrate`` of each runs. The old release migrates first and old and
new workers start; this release's ``migrate`` runs mid-run; more old and new workers start.
Checked: every task finishes, no step ran twice or in two workers at once, nothing is lost,
no traceback.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.integration import faults
from tests.waiting import wait_until

OLD_RELEASE = "91181ef"
TASKS = {task: 6 for task in range(1, 17)}


@pytest.fixture
def old_release():
    directory = faults.scratch_dir("jr-fault-old-release-")
    try:
        archive = subprocess.run(["git", "-C", str(faults.ROOT), "archive", OLD_RELEASE, "jr_checkpoint"],
                                 capture_output=True, timeout=30)
        if archive.returncode != 0:
            pytest.fail(f"git archive {OLD_RELEASE}: {archive.stderr.decode().strip()}", pytrace=False)
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True, timeout=30)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_old_and_new_workers_share_a_server_across_both_migrations(old_release):
    directory = faults.scratch_dir("jr-fault-upgrade-")
    server = faults.Cluster(directory)
    try:
        server.init().start()
        dsn = server.dsn()
        faults.migrate(dsn, pythonpath=old_release)
        with faults.workers(TASKS) as fleet:
            fleet.spawn("old1", dsn, pythonpath=old_release, step_ms=40)
            fleet.spawn("new1", dsn, step_ms=40)
            wait_until(lambda: len(fleet.events(what="end")) >= 12, 30, "the run to get going")
            faults.migrate(dsn)  # this release's migration, with both releases' workers running
            fleet.spawn("old2", dsn, pythonpath=old_release, step_ms=40)
            fleet.spawn("new2", dsn, step_ms=40)
            for name in ("old1", "new1", "old2", "new2"):
                assert fleet.wait_exit(name, timeout=45) == 0, fleet.stderr(name)
            faults.no_tracebacks(fleet)
            events = fleet.events()
        assert {e.worker for e in events if e.what == "start"} >= {"old1", "new1"}
        assert faults.concurrent_runs(events) == []
        starts: dict[tuple, int] = {}
        for event in (e for e in events if e.what == "start"):
            starts[(event.task, event.step)] = starts.get((event.task, event.step), 0) + 1
        assert {k: n for k, n in starts.items() if n > 1} == {}, "steps that ran twice"
        faults.check_ledger(dsn, TASKS)
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
