"""A partition: worker A in its own network namespace loses its link to the server (every packet
dropped silently, both ways) for longer than lease + outage; worker B takes the task over. The
link heals while B still runs the task, or after B has finished it. Either way:

- A runs no step after B took the task (A's journal: no step start after B's first);
- no write of A's lands after that (the audit trigger: no row written from A's address);
- every step is recorded once (one write per step in the audit) and the task finishes.

A is gated inside step 3 when the link goes down and its gate opens while the link is still
down: A then has a step to record and a next step to refuse, with its lease long gone. A stays
alive (it lingers) until it has reached the server again after the heal, so that anything it
kept back has had its chance to land.
"""

from __future__ import annotations

import time

import pytest

from tests.integration import faults
from tests.waiting import wait_until

TASKS = {1: 10}
LEASE, OUTAGE = 4.0, 2.0
A_GATE, B_GATE = (1, 3), (1, 7)


@pytest.fixture
def namespace():
    space = faults.Namespace()
    try:
        yield space.create()
    finally:
        space.remove()


@pytest.fixture
def server(namespace):
    hba = (f"host all all {namespace.root_address.rsplit('.', 1)[0]}.0/24 trust",)
    with faults.cluster(listen=namespace.root_address, hba=hba) as cluster:
        yield cluster


@pytest.mark.parametrize("heal", ["while_b_runs", "after_b_finished"])
def test_a_partitioned_owner_runs_and_writes_nothing_after_the_takeover(namespace, server, heal):
    tcp = server.dsn(host=namespace.root_address)
    faults.install_audit(tcp)
    with faults.workers(TASKS) as fleet:
        fleet.spawn("A", tcp, lease=LEASE, outage=OUTAGE, gates=(A_GATE,), prefix=namespace.prefix,
                    linger=True)
        fleet.wait_for("A", "gate", task=1, step=A_GATE[1])
        namespace.partition()
        cut = time.monotonic()
        fleet.release("A", *A_GATE)  # A finishes its step with no network

        gates = (B_GATE,) if heal == "while_b_runs" else ()
        fleet.spawn("B", tcp, lease=LEASE, outage=OUTAGE, gates=gates)
        first = fleet.wait_for("B", "start", task=1)
        # The partition outlasts lease + outage (a condition of the scenario, not a handshake).
        wait_until(lambda: time.monotonic() - cut > LEASE + OUTAGE + 0.5, 30, "the partition")
        if heal == "while_b_runs":
            fleet.wait_for("B", "gate", task=1, step=B_GATE[1])
            namespace.heal()
            fleet.wait_for("A", "seen", after=time.time(), timeout=45)  # A reaches the server again
            fleet.release("B", *B_GATE)
            assert fleet.wait_exit("B") == 0, fleet.stderr("B")
        else:
            assert fleet.wait_exit("B") == 0, fleet.stderr("B")
            namespace.heal()
            fleet.wait_for("A", "seen", after=time.time(), timeout=45)
        fleet.dismiss("A")
        assert fleet.wait_exit("A") == 0, fleet.stderr("A")
        events = fleet.events()
        faults.no_tracebacks(fleet)

    takeover = first.at
    late = [e for e in events if e.worker == "A" and e.what == "start" and e.at >= takeover]
    assert late == [], f"A ran steps after B took the task over: {late}"
    writes = faults.audit(tcp)
    stale = [w for w in writes if w.addr == namespace.address and w.at >= takeover]
    assert stale == [], f"A's writes landed after B took the task over: {stale}"
    per_step: dict[tuple, list] = {}
    for write in writes:
        per_step.setdefault((write.task, write.step), []).append(write.worker)
    assert all(len(who) == 1 for who in per_step.values()), f"steps written twice: {per_step}"
    assert faults.concurrent_runs(events) == []
    faults.check_ledger(tcp, TASKS)
