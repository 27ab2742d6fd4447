"""A ledger with a task in every state, and hostile text in every column: the dashboard's
tests (Flask test client, and the real browser) both fill their database with it."""

from __future__ import annotations

import contextlib
import datetime
import json

import psycopg2

from jr_checkpoint.schema import LOCK_NAMESPACE

HOSTILE = '<script>alert("pwned")</script> & \' "'

# task id -> the state the dashboard must show
STATES = {
    10: "finished",
    11: "unfinished",   # crashed after two steps
    12: "unfinished",   # a step failed, with hostile text everywhere
    13: "exhausted",
    14: "running",      # a session holds the advisory lock (held_locks() below), as workers
    -3: "running",      # before the lease did; the same for a negative (demo) task id
    15: "running",      # lease in the future, ISO timestamp
    16: "running",      # lease in the future, epoch seconds
    17: "dead",         # lease expired, its owner still named: the holder is gone
    18: "unfinished",   # lease that is not a time at all
}
LOCKED = (14, -3)


STEP = """INSERT INTO jr_step_rewards (task_id, step_number, step_type, target_file, step_content_hash,
    execution_result, execution_time_ms, error_detail)
VALUES (%s, %s, %s, %s, md5(%s::text), %s, %s, %s)"""
CHECKPOINT = """INSERT INTO jr_task_checkpoints (task_id, last_completed_step, total_steps, checkpoint_data)
VALUES (%s, %s, %s, %s)"""


def populate(dsn: str) -> None:
    """The rows workers leave behind, written as they are (the ledger's columns, not its API)."""
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    steps = [  # task, number, type, target, result, ms, error
        (10, 0, "write", "app/a.py", "success", 4, None),
        (10, 1, "search_replace", "app/a.py", "success", 9, None),
        (10, 2, "shell", "app/a.py", "success", 1500, None),
        (11, 0, "write", "app/a.py", "success", 5, None),
        (11, 1, "search_replace", "app/a.py", "success", 12, None),
        (12, 0, HOSTILE, HOSTILE, "success", 5, None),
        (12, 1, "shell", HOSTILE, "failed", 40, HOSTILE + "\nsecond line"),
        (13, 0, "shell", "app/b.py", "error", 7, "OSError: disk full"),
    ] + [(task_id, 0, "append", "app/c.py", "success", 5, None) for task_id in (14, -3, 15, 16, 17, 18)]
    leases = {14: None, -3: None, 15: future.isoformat(), 16: future.timestamp(),
              17: "2001-01-01T00:00:00+00:00", 18: "soon"}
    checkpoints = [  # task 10 finished: the decorator removed its checkpoint row
        (11, 1, 4, {"attempts": 1, "resume_at": 2}),
        (12, 0, 2, {"attempts": 2, "resume_at": 1, "note": HOSTILE}),
        (13, -1, 1, {"attempts": 4, "resume_at": 0, "exhausted": True}),
    ] + [(task_id, 0, 3, {"attempts": 1, "resume_at": 1} if lease is None else
          {"attempts": 1, "resume_at": 1, "owner": f"worker-{task_id}", "lease_until": lease})
         for task_id, lease in leases.items()]
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        for task_id, number, kind, target, result, ms, error in steps:
            cur.execute(STEP, (task_id, number, kind, target, f"{task_id}:{number}", result, ms, error))
        for task_id, last, total, data in checkpoints:
            cur.execute(CHECKPOINT, (task_id, last, total, json.dumps(data)))


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
