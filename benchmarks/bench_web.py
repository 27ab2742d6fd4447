#!/usr/bin/env python3
"""How fast the dashboard answers on a big ledger: every page and JSON endpoint, timed.

    python benchmarks/bench_web.py [--tasks 100000] [--steps 10] [--attempts 3] [--repeat 5] [--dsn DSN]

Fills a throwaway embedded server (or the empty database given by --dsn) with TASKS tasks of
STEPS step rows each, spread over the last 30 days (one statement, generate_series): 5% of the
tasks unfinished (a checkpoint row; a few of them exhausted, a few running under a lease),
failures and errors on the last step of some, re-runs on others; and ATTEMPTS attempt rows per
task on average (1 to 2 * ATTEMPTS - 1 of them: every one but the last died, the last
finished, or for an unfinished task died, and for a few of those is still 'running' past its
lease: a dead holder). Then it requests each page
and JSON endpoint through Flask's test client (the whole request: connection, queries,
template), --repeat times after one warm-up, and prints the median against the 0.5 s target.

A benchmark, not a test: tests/integration/test_web_benchmark.py runs it with a small ledger
only to check that it still works; the figures are never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from jr_checkpoint import embedded, schema
from jr_checkpoint.dsn import Target, resolve
from jr_checkpoint.web.serve import make_app

TARGET_SECONDS = 0.5

FILL_STEPS = """
INSERT INTO jr_step_rewards (task_id, step_number, step_type, target_file, step_content_hash,
    execution_result, execution_time_ms, error_detail, created_at, updated_at)
SELECT t, s,
       (ARRAY['write', 'search_replace', 'append', 'shell', 'compile'])[1 + (t + s) %% 5],
       'app/module_' || (t %% 200) || '.py',
       md5(t || ':' || s),
       CASE WHEN s = %(last)s AND t %% 20 = 0 THEN 'failed'
            WHEN s = %(last)s AND t %% 97 = 0 THEN 'error' ELSE 'success' END,
       (CASE WHEN (t + s) %% 5 = 3 THEN 2000 ELSE 5 END * (0.2 + random()))::integer,
       CASE WHEN s = %(last)s AND t %% 20 = 0 THEN 'pytest: ' || (t %% 7) || ' failed'
            WHEN s = %(last)s AND t %% 97 = 0 THEN 'OSError: disk full' END,
       started + make_interval(secs => s * 3),
       started + make_interval(secs => s * 3 + CASE WHEN t %% 13 = 0 THEN 60 ELSE 0 END)
FROM generate_series(1, %(tasks)s) t
CROSS JOIN LATERAL (SELECT LOCALTIMESTAMP - make_interval(secs => (%(tasks)s - t) * %(spacing)s
                                                                  + 3 * %(last)s + 60) AS started) b
CROSS JOIN generate_series(0, %(last)s) s
"""

FILL_CHECKPOINTS = """
INSERT INTO jr_task_checkpoints (task_id, last_completed_step, total_steps, checkpoint_data,
    created_at, updated_at)
SELECT t, %(last)s - 1, %(last)s + 1,
       jsonb_build_object('attempts', 1 + (t / 20) %% 4, 'resume_at', %(last)s)
       || CASE WHEN t %% 100 = 0 THEN '{"exhausted": true}'::jsonb
               WHEN t %% 1000 = 20 THEN jsonb_build_object(
                   'owner', 'worker-' || t, 'lease_until', extract(epoch FROM now()) + 3600)
               ELSE '{}'::jsonb END,
       LOCALTIMESTAMP - make_interval(secs => (%(tasks)s - t) * %(spacing)s + 3 * %(last)s + 60),
       LOCALTIMESTAMP - make_interval(secs => (%(tasks)s - t) * %(spacing)s + 60)
FROM generate_series(20, %(tasks)s, 20) t
"""


FILL_ATTEMPTS = """
INSERT INTO jr_task_attempts (task_id, attempt, owner, host, pid, started_at, ended_at, outcome,
    resumed_at, ran, skipped, failed, lease_until)
SELECT t, a, 'owner-' || t || '-' || a, 'worker-' || (t %% 7), 1000 + a,
       started + make_interval(secs => (a - 1) * 3),
       CASE WHEN a = n AND t %% 1000 = 40 THEN NULL ELSE started + make_interval(secs => a * 3) END,
       CASE WHEN a < n THEN 'died' WHEN t %% 1000 = 40 THEN 'running'
            WHEN t %% 20 = 0 THEN 'failed' ELSE 'finished' END,
       CASE WHEN a > 1 THEN %(last)s END,
       CASE WHEN a = 1 THEN ARRAY(SELECT generate_series(0, %(last)s - 1)) ELSE ARRAY[%(last)s] END,
       CASE WHEN a = 1 THEN '{}'::integer[] ELSE ARRAY(SELECT generate_series(0, %(last)s - 1)) END,
       '{}'::integer[],
       CASE WHEN a = n AND t %% 1000 = 40 THEN extract(epoch FROM now()) - 600 END
FROM generate_series(1, %(tasks)s) t
CROSS JOIN LATERAL (SELECT LOCALTIMESTAMP - make_interval(secs => (%(tasks)s - t) * %(spacing)s
                                                                  + 3 * %(last)s + 60) AS started,
                           1 + (t * 7919) %% (2 * %(attempts)s - 1) AS n) b
CROSS JOIN LATERAL generate_series(1, n) a
"""


def fill(target: Target, tasks: int, steps: int, attempts: int = 3) -> float:
    """Create the tables, fill them, VACUUM ANALYZE (as autovacuum would); return seconds."""
    schema.create_tables(target)
    started = time.perf_counter()
    conn = target.connect()
    conn.autocommit = True
    params = {"tasks": tasks, "last": steps - 1, "spacing": 30 * 86400 / tasks,
              "attempts": max(attempts, 1)}
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM jr_step_rewards) "
                    "OR EXISTS (SELECT 1 FROM jr_task_checkpoints)")
        if cur.fetchone()[0]:
            raise SystemExit(f"{target.describe()} already has a ledger: give an empty database")
        cur.execute(FILL_STEPS, params)
        cur.execute(FILL_CHECKPOINTS, params)
        if attempts:
            cur.execute(FILL_ATTEMPTS, params)
        cur.execute("VACUUM ANALYZE jr_step_rewards")
        cur.execute("VACUUM ANALYZE jr_task_checkpoints")
        cur.execute("VACUUM ANALYZE jr_task_attempts")
    return time.perf_counter() - started


def endpoints(client, tasks: int) -> list[tuple[str, str]]:
    """(label, URL): every page and JSON endpoint, and the slow corners of each."""
    halfway = datetime.datetime.now() - datetime.timedelta(days=15)  # the ledger spans 30 days
    deep = f"{halfway.isoformat()}~0"
    busy = tasks - tasks % 20 or 20  # an unfinished task with a failed step
    urls = [("tasks, first page", "/"), ("tasks, a page 15 days back", f"/?before={deep}"),
            ("tasks, finished", "/?state=finished"), ("tasks, unfinished", "/?state=unfinished"),
            ("tasks, running", "/?state=running"), ("tasks, exhausted", "/?state=exhausted"),
            ("tasks, dead", "/?state=dead"), (f"task {busy}", f"/tasks/{busy}")]
    urls += [(f"analytics, since={w}", f"/analytics?since={w}") for w in ("1h", "24h", "7d", "all")]
    return [row for label, url in urls
            for row in ((label, url), (f"{label} (JSON)", _api(url)))]


def _api(url: str) -> str:
    """A page's JSON twin: / is /api/tasks, /x is /api/x."""
    return "/api/tasks" + url[1:] if url == "/" or url.startswith("/?") else "/api" + url


def timed(client, url: str, repeat: int) -> float:
    response = client.get(url)  # warm-up
    assert response.status_code == 200, (url, response.status_code, response.get_data(as_text=True)[:300])
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, url
    return statistics.median(times)


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[tuple[Target, str]]:
    if dsn:
        yield resolve(dsn), resolve(dsn).describe()
        return
    with tempfile.TemporaryDirectory(prefix="jr-bench-web-") as scratch:
        with embedded.server(Path(scratch) / "pgdata", keep_data=False) as target:
            yield target, "a throwaway embedded server"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=10, help="step rows per task")
    parser.add_argument("--attempts", type=int, default=3, help="attempt rows per task, on average "
                        "(0: none, a ledger from before the attempt ledger)")
    parser.add_argument("--repeat", type=int, default=5, help="requests per endpoint (median shown)")
    parser.add_argument("--dsn", help="an empty database to fill (default: a throwaway embedded server)")
    args = parser.parse_args(argv)
    with database(args.dsn) as (target, where):
        seconds = fill(target, args.tasks, args.steps, args.attempts)
        with contextlib.closing(target.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM jr_task_attempts")
            (attempt_rows,) = cur.fetchone()
        print(f"ledger: {args.tasks * args.steps:,} step rows over {args.tasks:,} tasks, "
              f"{attempt_rows:,} attempt rows, filled in {seconds:.1f} s on {where}")
        print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPU(s), "
              f"median of {args.repeat} requests through Flask's test client\n")
        client = make_app(target).test_client()
        rows = [(label, timed(client, url, args.repeat)) for label, url in endpoints(client, args.tasks)]
    width = max(len(label) for label, _ in rows)
    print(f"{'endpoint'.ljust(width)}  {'median ms':>9}  target {TARGET_SECONDS * 1000:.0f} ms")
    print(f"{'-' * width}  {'-' * 9}  ----------")
    for label, median in rows:
        verdict = "met" if median < TARGET_SECONDS else "NOT met"
        print(f"{label.ljust(width)}  {median * 1000:9.1f}  {verdict}")
    missed = [label for label, median in rows if median >= TARGET_SECONDS]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} under {TARGET_SECONDS} s"
          + (f"; not: {', '.join(missed)}" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
