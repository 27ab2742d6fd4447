"""The report queries against the plain definitions of their figures, on a ledger of odd rows.

The queries of ``sql/reports.sql`` read the ledger through indexes (partial ones for the
troubled steps, one count per time slice, ...); these tests compute every figure again the
slow and obvious way (``percentile_cont``, one pass over every row, the slice expression
applied to each row) and require the same answer, value for value.
"""

from __future__ import annotations

import contextlib
import datetime

import psycopg2
import pytest

from jr_checkpoint import db, reports
from jr_checkpoint.dsn import resolve
from jr_checkpoint.sql import REPORTS
from jr_checkpoint.web import ledger
from tests.conftest import query, record_row
from tests.web_ledger import HOSTILE

LONG = "deep/" * 300 + "x.py"    # 1504 bytes: past what idx_step_rewards_rerun carries
HUGE = "d/" * 2000 + "y.py"      # 4004 bytes: more than a B-tree entry may hold

# task, step, type, target, result, ms, error, created (hours ago), updated (hours ago; None: NULL)
ROWS = [
    (1, 0, "write", "a.py", "success", 10, None, 1, 1),
    (1, 1, "write", "a.py", "success", 20, None, 1, 1),
    (1, 2, "shell", "a.py", "success", 1500, None, 1, 1),
    (2, 0, "write", "b.py", "success", 30, None, 30, 30),
    (2, 1, "write", "b.py", "success", 40, None, 30, 30),
    (2, 2, "write", "b.py", "success", 100, None, 30, 30),
    (3, 0, "shell", "b.py", "failed", 7, "exit 1\nmore", 5, 5),
    (3, 1, "shell", "b.py", "error", 3, "Boom: no", 4, 4),
    (3, 2, "compile", None, "pending", None, None, 3, 3),
    (3, 3, "compile", "", "skipped", 0, None, 3, 3),
    # re-runs: a success updated after it was created; the text of the failure before it kept
    (4, 0, "shell", "b.py", "success", 8, "was: exit 1", 6, 2),
    (4, 1, "write", LONG, "success", 12, None, 6, 2),
    (4, 2, "write", HUGE, "success", 14, None, 6, 2),
    (4, 3, "write", HUGE, "failed", 15, "huge fails", 6, 2),
    (4, 4, "write", "a.py", "failed", 16, "again", 6, 2),
    # no type, and a type called unknown: both shown as "unknown"
    (5, 0, None, "a.py", "success", 5, None, 1, 1),
    (5, 1, None, None, "error", None, "nul", 1, 1),
    (5, 2, "unknown", "a.py", "failed", 6, "x", 1, 1),
    # a success with a text: not troubled, yet its group's last error
    (6, 0, "write", "a.py", "success", 11, "warning: slow", 0.5, 0.5),
    # long ago
    (7, 0, "write", "a.py", "failed", 50, "old failure", 400, 400),
    (7, 1, "shell", "c.py", "success", 60, None, 400, 300),
    # odd times: updated before created (not a re-run), no updated_at at all
    (8, 0, "write", "c.py", "success", 70, None, 1, 2),
    (8, 1, "write", "c.py", "failed", 80, "no time", 1, None),
    # ties: the same count of troubled and failing steps, ordered by type and target
    (9, 0, "append", "t1.py", "failed", 1, "e1", 1, 1),
    (9, 1, "append", "t2.py", "failed", 1, "e2", 1, 1),
    (9, 2, "Append", "t1.py", "failed", 1, "e3", 1, 1),
    (10, 0, HOSTILE, HOSTILE, "failed", 9, HOSTILE + "\nsecond", 1, 1),
    (12, 0, "shell", "b.py", "timeout", 900, "killed", 1, 1),  # an outcome after 'success'
] + [(11, i, "search_replace", "s.py", "success", ms, None, 1, 1)
     for i, ms in enumerate((5, 5, 5, 7, 9, 9, 100, 100, 250, 1000))]

INSERT = """INSERT INTO jr_step_rewards (task_id, step_number, step_type, target_file,
    execution_result, execution_time_ms, error_detail, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, LOCALTIMESTAMP - make_interval(secs => %s * 3600),
        LOCALTIMESTAMP - make_interval(secs => %s * 3600))"""

# The figures by their definitions: one pass over every row of the window.
REFERENCE_BY_TYPE = """
SELECT CASE WHEN grouping(step_type) = 1 THEN NULL ELSE coalesce(step_type, 'unknown') END,
       count(*),
       (100.0 * count(*) FILTER (WHERE execution_result = 'success') / NULLIF(count(*), 0))::float8,
       count(*) FILTER (WHERE execution_result = 'success' AND updated_at > created_at),
       count(*) FILTER (WHERE execution_result <> 'success'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms)
FROM jr_step_rewards
WHERE %(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp
GROUP BY GROUPING SETS ((step_type), ())
ORDER BY grouping(step_type), 2 DESC, 1"""

REFERENCE_FAILING = """
SELECT step_type, target_file, troubled, failing, rerun, steps,
       (SELECT left(split_part(e.error_detail, E'\\n', 1), 200) FROM jr_step_rewards e
        WHERE e.updated_at = g.last_error_at AND e.error_detail IS NOT NULL
          AND e.step_type IS NOT DISTINCT FROM g.step_type
          AND e.target_file IS NOT DISTINCT FROM g.target_file
        LIMIT 1)
FROM (SELECT step_type, target_file,
             count(*) FILTER (WHERE execution_result <> 'success' OR updated_at > created_at) AS troubled,
             count(*) FILTER (WHERE execution_result <> 'success') AS failing,
             count(*) FILTER (WHERE execution_result = 'success' AND updated_at > created_at) AS rerun,
             count(*) AS steps,
             max(updated_at) FILTER (WHERE error_detail IS NOT NULL) AS last_error_at
      FROM jr_step_rewards
      WHERE %(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp
      GROUP BY step_type, target_file) g
WHERE troubled > 0
ORDER BY troubled DESC, failing DESC, step_type, target_file
LIMIT %(limit)s"""

# A step's slice, as the dashboard defines it (and computed it row by row before).
REFERENCE_SLICES = """
SELECT least(floor(date_part('epoch', updated_at - %(lo)s::timestamp) / %(width)s::float8),
             %(buckets)s - 1)::integer, execution_result, count(*)
FROM jr_step_rewards WHERE updated_at >= %(lo)s::timestamp
GROUP BY 1, 2"""


def add_rows(dsn, rows):
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.executemany(INSERT, rows)
        cur.execute("ANALYZE jr_step_rewards")


@pytest.fixture
def odd_ledger(dsn):
    add_rows(dsn, ROWS)
    return dsn


def window_start(dsn, seconds):
    return query(dsn, REPORTS["window_start"], {"seconds": seconds})[0][0]


@pytest.mark.parametrize("seconds", [None, 2 * 86400, 12 * 3600, 9000, 600])  # 600 s: no step
@pytest.mark.parametrize("top", [1, 3, 100])
def test_stats_are_the_figures_by_their_definitions(odd_ledger, seconds, top):
    report = reports.stats(resolve(odd_ledger), seconds, limit=top)
    since = window_start(odd_ledger, seconds)  # no row is within minutes of a window's start
    expected = [tuple(row) for row in query(odd_ledger, REFERENCE_BY_TYPE, {"since": since}) if row[1]]
    rows = report["by_type"] + ([{**report["total"], "step_type": None}] if report["total"] else [])
    shown = [(r["step_type"], r["steps"], r["success_pct"], r["rerun"], r["failing"], r["p50_ms"],
              r["p95_ms"]) for r in rows]
    assert shown == expected
    failing = query(odd_ledger, REFERENCE_FAILING, {"since": since, "limit": top})
    assert [tuple(row.values()) for row in report["failing"]] == [tuple(row) for row in failing]
    assert len(report["failing"]) == min(top, len(query(
        odd_ledger, REFERENCE_FAILING, {"since": since, "limit": 1000})))


def test_the_odd_rows_count_where_they_should(odd_ledger):
    report = reports.stats(resolve(odd_ledger), None, limit=100)
    by_type = {row["step_type"]: row for row in report["by_type"]}
    # the re-runs: a short path, a long one, a path too long for any index entry, and the
    # failed re-runs (failing, not re-run); updated before created is no re-run
    assert (by_type["write"]["rerun"], by_type["write"]["failing"]) == (2, 4)
    assert (by_type["shell"]["rerun"], by_type["shell"]["failing"]) == (2, 3)
    groups = {(row["step_type"], row["target_file"]): row for row in report["failing"]}
    assert (groups[("write", HUGE)]["troubled"], groups[("write", HUGE)]["rerun"],
            groups[("write", HUGE)]["steps"]) == (2, 1, 2)
    assert groups[("write", LONG)]["rerun"] == 1 and groups[("write", LONG)]["last_error"] is None
    assert groups[("shell", "b.py")]["last_error"] == "killed"  # the newest text of the group
    assert groups[("write", "a.py")]["last_error"] == "warning: slow"  # a success's text counts too
    assert groups[(None, None)]["steps"] == 1 and (None, "a.py") not in groups  # that one succeeded
    assert ("write", "c.py") in groups and groups[("write", "c.py")]["rerun"] == 0


def test_a_re_run_with_a_path_too_long_for_an_index_is_recorded_and_counted(store, dsn):
    """Through the real write path: a failure, then its re-run that succeeds, on a 4 kB path."""
    record_row(store, 1, 0, execution_result="failed", step_type="write", target_file=HUGE,
               execution_time_ms=5, error_detail="first try")
    record_row(store, 1, 0, execution_result="success", step_type="write", target_file=HUGE,
               execution_time_ms=6, last_completed_step=0)
    record_row(store, 2, 0, execution_result="failed", step_type="write", target_file="short.py",
               execution_time_ms=5, error_detail="first try")
    record_row(store, 2, 0, execution_result="success", step_type="write", target_file="short.py",
               execution_time_ms=6, last_completed_step=0)
    # each re-run is in the partial index for its path's length, and only there
    assert query(dsn, """SELECT count(*) FILTER (WHERE octet_length(target_file) > 1000),
                                count(*) FILTER (WHERE octet_length(target_file) <= 1000)
                         FROM jr_step_rewards WHERE updated_at > created_at
                           AND execution_result = 'success'""") == [(1, 1)]
    report = reports.stats(resolve(dsn), None, limit=10)
    assert report["total"]["rerun"] == 2 and report["total"]["failing"] == 0
    assert [(r["target_file"], r["troubled"], r["rerun"], r["steps"], r["last_error"])
            for r in report["failing"]] == [(HUGE, 1, 1, 1, None), ("short.py", 1, 1, 1, None)]


# -- the outcomes over time ------------------------------------------------------------------

def slices_by_definition(dsn, lo, hi):
    width = (hi - lo).total_seconds() / ledger.BUCKETS
    counts = {(bucket, result): steps for bucket, result, steps in query(
        dsn, REFERENCE_SLICES, {"lo": lo, "width": width, "buckets": ledger.BUCKETS})}
    return [{result: n for (bucket, result), n in counts.items() if bucket == i}
            for i in range(ledger.BUCKETS)]


def served_slices(dsn, lo, hi):
    with db.cursor(resolve(dsn)) as cur:
        served = ledger.outcomes(cur, lo, hi)
    assert served["from"] == str(lo) and served["to"] == str(hi)
    assert all(set(ledger.OUTCOMES) <= set(s) for s in served["slices"])  # always there, 0 or not
    return [{k: v for k, v in s.items() if k != "start" and v} for s in served["slices"]]


@pytest.mark.parametrize("span", [
    datetime.timedelta(days=1),                           # slices of exactly an hour
    datetime.timedelta(days=1, microseconds=7),           # boundaries between two microseconds
    datetime.timedelta(days=30, seconds=11, microseconds=123457),
    datetime.timedelta(seconds=1),                        # a window of a second (an empty ledger's)
])
def test_a_step_at_a_slice_boundary_is_in_the_slice_the_expression_gives_it(dsn, span):
    lo = datetime.datetime(2026, 3, 1, 12, 0, 0, 250001)
    hi = lo + span
    width = span / ledger.BUCKETS
    rows, task = [], 0
    for i in range(ledger.BUCKETS + 1):
        boundary = lo + width * i
        for offset in (-1, 0, 1):  # microseconds around the boundary, rounded either way
            for result in ("success", "failed", "error", "skipped", "timeout"):
                task += 1
                at = boundary + datetime.timedelta(microseconds=offset)
                rows.append((task, 0, "write", "a.py", result, 1, None, at, at))
    rows.append((task + 1, 0, "write", "a.py", "success", 1, None, lo, hi + span))  # after hi
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.executemany(INSERT.replace("LOCALTIMESTAMP - make_interval(secs => %s * 3600)", "%s"), rows)
        cur.execute("ANALYZE jr_step_rewards")
    expected = slices_by_definition(dsn, lo, hi)
    assert served_slices(dsn, lo, hi) == expected
    assert sum(sum(s.values()) for s in expected) == len(rows) - 5  # the rows 1 us before lo are out


def test_outcomes_of_the_odd_ledger_are_by_definition(odd_ledger):
    lo, hi = query(odd_ledger, REPORTS["web_window"], {"seconds": None})[0]
    assert served_slices(odd_ledger, lo, hi) == slices_by_definition(odd_ledger, lo, hi)
    lo, hi = query(odd_ledger, REPORTS["web_window"], {"seconds": 86400})[0]
    assert served_slices(odd_ledger, lo, hi) == slices_by_definition(odd_ledger, lo, hi)


# -- what each report reads ----------------------------------------------------------------------

def plan(dsn, sql, params):
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SET enable_seqscan = off")  # an index the query cannot use shows as a Seq Scan
        cur.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cur.fetchall())


@pytest.mark.parametrize("seconds", [None, 86400])
def test_the_troubled_steps_are_read_through_their_indexes_never_every_row(odd_ledger, seconds):
    since = window_start(odd_ledger, seconds)
    params = {"since": since, "limit": 10, "types": ["write", None], "files": ["a.py", None],
              "step_types": ["write", "shell"] if seconds is None else []}
    failing = plan(odd_ledger, REPORTS["stats_failing"], params)
    for index in ("idx_step_rewards_result", "idx_step_rewards_rerun ", "idx_step_rewards_rerun_long"):
        assert index in failing + " ", failing
    assert "idx_step_rewards_file" in plan(odd_ledger, REPORTS["stats_failing_steps"], params)
    lo, hi = query(odd_ledger, REPORTS["web_window"], {"seconds": seconds})[0]
    outcomes = plan(odd_ledger, REPORTS["web_outcomes"], {
        "lo": lo, "width": (hi - lo).total_seconds() / ledger.BUCKETS, "buckets": ledger.BUCKETS})
    assert "idx_step_rewards_activity" in outcomes and "idx_step_rewards_result" in outcomes
    by_type = plan(odd_ledger, REPORTS["stats_by_type"], params)
    for text in (failing, by_type, outcomes):
        assert "Seq Scan on jr_step_rewards" not in text, text
