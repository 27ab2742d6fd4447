"""A stalled owner: worker A is SIGSTOPped inside a step past its lease, B takes the task over
and finishes it, then A is SIGCONTed. A must run nothing more and write nothing: it gets
TaskOwnershipLost before its next step, whatever rows B's release has removed by then.
"""

from __future__ import annotations

import os
import signal
import time

from tests.integration import faults

TASKS = {1: 8}
LEASE, OUTAGE = 3.0, 2.0
GATE = (1, 3)


def test_a_stalled_owner_runs_and_writes_nothing_after_it_wakes(dsn):
    faults.install_audit(dsn)
    with faults.workers(TASKS) as fleet:
        fleet.spawn("A", dsn, lease=LEASE, outage=OUTAGE, gates=(GATE,))
        fleet.wait_for("A", "gate", task=1, step=GATE[1])
        os.kill(fleet.processes["A"].pid, signal.SIGSTOP)
        stopped = time.time()

        fleet.spawn("B", dsn, lease=LEASE, outage=OUTAGE)
        assert fleet.wait_exit("B") == 0, fleet.stderr("B")
        takeover = min(e.at for e in fleet.events("B", "start"))
        assert takeover - stopped >= LEASE * 0.9, "B ran a step while A's lease was still valid"

        fleet.release("A", *GATE)
        woken = time.time()
        os.kill(fleet.processes["A"].pid, signal.SIGCONT)
        assert fleet.wait_exit("A") == 0, fleet.stderr("A")
        events = fleet.events()
        faults.no_tracebacks(fleet)

    a_late = [e for e in events if e.worker == "A" and e.what == "start" and e.at > woken]
    assert a_late == [], f"A ran steps after it woke: {a_late}"
    assert [e for e in events if e.worker == "A" and e.what == "lost" and e.task == 1], \
        "A was never told it lost the task (TaskOwnershipLost)"
    writes = faults.audit(dsn)
    stale = [w for w in writes if w.worker == "A" and w.at > takeover]
    assert stale == [], f"A's writes landed after B took the task over: {stale}"
    per_step = {}
    for write in writes:
        per_step.setdefault((write.task, write.step), []).append(write.worker)
    assert all(len(who) == 1 for who in per_step.values()), f"steps written twice: {per_step}"
    # The step A was frozen in finishes when A wakes (no lease can stop a step halfway):
    # that one overlaps B's run; no other step of A's may.
    clashes = faults.concurrent_runs(events)
    assert clashes, "A's frozen step should overlap B's run: was A stopped inside it?"
    assert [c for c in clashes if c[1:3] != ("A", GATE[1])] == []
    faults.check_ledger(dsn, TASKS)
