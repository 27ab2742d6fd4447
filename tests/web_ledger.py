"""A ledger with a task in every state, and hostile text in every column: the dashboard's
tests (Flask test client, and the real browser) both fill their database with it."""

from __future__ import annotations

import contextlib
import datetime
import json

import psycopg2

from jr_checkpoint import CheckpointStore
from jr_checkpoint.store import LOCK_NAMESPACE

HOSTILE = '<script>alert("pwned")</script> & \' "'

# task id -> the state the dashboard must show
STATES = {
    10: "finished",
    11: "unfinished",   # crashed after two steps
    12: "unfinished",   # a step failed, with hostile text everywhere
    13: "exhausted",
    14: "running",      # a worker holds the advisory lock (held_locks() below)
    -3: "running",      # the same, for a negative (demo) task id
    15: "running",      # lease in the future, ISO timestamp
    16: "running",      # lease in the future, epoch seconds
    17: "unfinished",   # lease expired
    18: "unfinished",   # lease that is not a time at all
}
LOCKED = (14, -3)


def _record(store, task_id, number, result="success", *, step_type="write", target="app/a.py",
            ms=5, error=None, total=None, data=None):
    store.record_step(task_id, number, execution_result=result, step_type=step_type,
                      target_file=target, execution_time_ms=ms, error_detail=error,
                      last_completed_step=number if result == "success" else number - 1,
                      total_steps=total, checkpoint_data=data)


def populate(dsn: str) -> None:
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    with contextlib.closing(CheckpointStore(dsn)) as store:
        for number, (kind, ms) in enumerate([("write", 4), ("search_replace", 9), ("shell", 1500)]):
            _record(store, 10, number, step_type=kind, ms=ms, total=3, data={"attempts": 2})
        store.cleanup_checkpoints(10)  # finished: the decorator drops the checkpoint row
        _record(store, 11, 0, total=4, data={"attempts": 1, "resume_at": 1})
        _record(store, 11, 1, step_type="search_replace", ms=12, total=4,
                data={"attempts": 1, "resume_at": 2})
        _record(store, 12, 0, step_type=HOSTILE, target=HOSTILE, total=2,
                data={"attempts": 2, "resume_at": 1, "note": HOSTILE})
        _record(store, 12, 1, "failed", step_type="shell", target=HOSTILE, ms=40,
                error=HOSTILE + "\nsecond line", total=2, data={"attempts": 2, "resume_at": 1})
        _record(store, 13, 0, "error", step_type="shell", target="app/b.py", ms=7,
                error="OSError: disk full", total=1, data={"attempts": 4, "exhausted": True})
        leases = {14: None, -3: None, 15: future.isoformat(), 16: future.timestamp(),
                  17: "2001-01-01T00:00:00+00:00", 18: "soon"}
        for task_id, lease in leases.items():
            data = {"attempts": 1} if lease is None else {"attempts": 1, "lease_until": lease}
            _record(store, task_id, 0, step_type="append", target="app/c.py", total=3, data=data)


@contextlib.contextmanager
def held_locks(dsn: str, task_ids=LOCKED):
    """A worker's session: holds the store's advisory lock on each task until the block ends."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for task_id in task_ids:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, task_id))
                assert cur.fetchone()[0]
        yield
    finally:
        conn.close()


def dumps(value) -> str:
    return json.dumps(value, default=str)
