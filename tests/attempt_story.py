"""The demo's story written as rows, straight into the ledger's tables (SQL, not the writer):
task -1, attempt 1 ran steps 0-2 and died in step 3, attempt 2 resumed at 3, skipped 0-2, ran
3-5 and finished. Also a task whose holder died without anyone closing its attempt (dead), and
a task with a step row written outside every attempt ("attempt unknown").

The dashboard's tests, the status tests, trajectory()'s and the browser test all read it.
"""

from __future__ import annotations

import contextlib

import psycopg2

from jr_checkpoint import demo

DEMO_TASK = -1
DEAD_TASK = 30  # attempt 1 still 'running', its lease an hour past; the checkpoint names its owner
MIXED_TASK = 31  # one step row from the host's own helper, before the attempt; one from attempt 1

# (attempt, outcome, ran, skipped, failed, resumed_at, host, pid, started s, ended s) relative to
# a start a minute ago
DEMO_ATTEMPTS = [
    (1, "died", [0, 1, 2], [], [], None, "demo-host", 4101, 0.0, 2.0),
    (2, "finished", [3, 4, 5], [0, 1, 2], [], 3, "demo-host", 4100, 2.0, 3.0),
]
# step -> seconds after the start when its row was last written (attempt 1: 0-2, attempt 2: 3-5)
DEMO_STEP_TIMES = {0: 0.1, 1: 0.2, 2: 0.3, 3: 2.1, 4: 2.2, 5: 2.3}

ATTEMPT = """INSERT INTO jr_task_attempts (task_id, attempt, owner, host, pid, started_at, ended_at,
    outcome, resumed_at, ran, skipped, failed, lease_until)
VALUES (%(task)s, %(attempt)s, %(owner)s, %(host)s, %(pid)s,
        %(start)s::timestamp + make_interval(secs => %(started)s),
        %(start)s::timestamp + make_interval(secs => %(ended)s),
        %(outcome)s, %(resumed_at)s, %(ran)s, %(skipped)s, %(failed)s, %(lease)s)"""
STEP = """INSERT INTO jr_step_rewards (task_id, step_number, step_type, target_file, step_content_hash,
    execution_result, execution_time_ms, created_at, updated_at)
VALUES (%(task)s, %(number)s, %(type)s, %(path)s, md5(%(task)s || ':' || %(number)s), 'success', %(ms)s,
        %(start)s::timestamp + make_interval(secs => %(at)s),
        %(start)s::timestamp + make_interval(secs => %(at)s))"""


def insert_story(dsn: str) -> None:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT LOCALTIMESTAMP - interval '1 minute', extract(epoch FROM now())")
        start, now = cur.fetchone()
        for number, step in enumerate(demo.sample_steps()):
            cur.execute(STEP, {"task": DEMO_TASK, "number": number, "type": step["type"],
                               "path": step["path"], "ms": 3 + number, "start": start,
                               "at": DEMO_STEP_TIMES[number]})
        for attempt, outcome, ran, skipped, failed, resumed, host, pid, started, ended in DEMO_ATTEMPTS:
            cur.execute(ATTEMPT, {"task": DEMO_TASK, "attempt": attempt, "owner": f"owner-{attempt}",
                                  "host": host, "pid": pid, "start": start, "started": started,
                                  "ended": ended, "outcome": outcome, "resumed_at": resumed, "ran": ran,
                                  "skipped": skipped, "failed": failed, "lease": None})
        # the dead holder: it ran step 0, was in step 1 when it vanished; nobody closed its attempt
        cur.execute(STEP, {"task": DEAD_TASK, "number": 0, "type": "write", "path": "app/d.py", "ms": 4,
                           "start": start, "at": 1.0})
        cur.execute("""INSERT INTO jr_task_attempts (task_id, attempt, owner, host, pid, started_at,
                           outcome, ran, skipped, failed, lease_until)
                       VALUES (%s, 1, 'owner-dead', 'worker-b', 777,
                               %s::timestamp + interval '0.5 second', 'running', '{0}', '{}', '{}', %s)""",
                    (DEAD_TASK, start, now - 3600))
        cur.execute("""INSERT INTO jr_task_checkpoints (task_id, last_completed_step, total_steps,
                           checkpoint_data)
                       VALUES (%s, 0, 3, jsonb_build_object('attempts', 1, 'owner', 'owner-dead',
                                                            'lease_until', %s::float8))""",
                    (DEAD_TASK, now - 3600))
        # mixed: a row from the host's helper before any attempt, then attempt 1 (finished)
        cur.execute(STEP, {"task": MIXED_TASK, "number": 0, "type": "shell", "path": "app/m.py", "ms": 5,
                           "start": start, "at": -30.0})
        cur.execute(STEP, {"task": MIXED_TASK, "number": 1, "type": "shell", "path": "app/m.py", "ms": 5,
                           "start": start, "at": 5.5})
        cur.execute(ATTEMPT, {"task": MIXED_TASK, "attempt": 1, "owner": "owner-m", "host": "worker-c",
                              "pid": 9, "start": start, "started": 5.0, "ended": 6.0,
                              "outcome": "finished", "resumed_at": 1, "ran": [1], "skipped": [0],
                              "failed": [], "lease": None})
