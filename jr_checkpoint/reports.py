"""What the command line shows about the ledger: status, stats, prune; durations; tables.

The figures are computed by PostgreSQL (``sql/reports.sql``, through :mod:`jr_checkpoint.db`);
this module only fetches them and lays them out as lines of text. It never prints: the
command line does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import db, history
from .dsn import DEFAULT_CONNECT_TIMEOUT, Target
from .errors import ConfigurationError
from .sql import REPORTS

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")

PRUNE_BATCH = 1000
# A thousand years: beyond that, "now minus the duration" leaves PostgreSQL's timestamp range.
MAX_DURATION_DAYS = 365_250


def parse_duration(text: str) -> int:
    """``30s``, ``15m``, ``2h``, ``7d`` -> seconds; anything else is a ConfigurationError."""
    match = _DURATION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"bad duration {text!r}: use a whole number and s, m, h or d (e.g. 30s, 15m, 2h, 7d)"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION_DAYS * _UNITS["d"]:
        raise ConfigurationError(f"duration too long: {text!r} (at most {MAX_DURATION_DAYS}d, "
                                 "a thousand years)")
    return seconds


# -- the database ------------------------------------------------------------------------------

@contextlib.contextmanager
def concurrently(target: Target, connect_timeout: float | None,
                 job: Callable[[Any], Any]) -> Iterator[concurrent.futures.Future[Any]]:
    """Run ``job(cursor)`` on a connection of its own, in a thread, while the block runs.

    Yields the job's future; on leaving the block the job is waited for, and its error, if
    any, raised (after the block's own, which comes first).
    """
    def run() -> Any:
        with db.cursor(target, connect_timeout) as cur:
            return job(cur)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run)
        yield future
        future.result()


def rows(cur: Any, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the report query ``name`` as dicts."""
    return db.rows(cur, REPORTS[name], params)


def stats(target: Target, since_seconds: int | None = None, *, limit: int = 5,
          connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> dict[str, Any]:
    """Per step type, then the slowest and the most-failing steps, over the window (or all time)."""
    with db.cursor(target, connect_timeout) as cur:
        cur.execute(REPORTS["window_start"], {"seconds": since_seconds})
        params = {"since": db.one_row(cur)[0], "limit": limit}  # one start for every query
        # The most-failing steps on a second connection while this one counts the step types:
        # PostgreSQL runs a statement on one core (a few when in parallel), so both cores work.
        with concurrently(target, connect_timeout, lambda other: _failing(other, params)) as failing:
            by_type = _by_type(cur, params, all_time=since_seconds is None)
            slowest = rows(cur, "stats_slowest", params)
    total, types = None, []
    for row in by_type:
        if row.pop("is_total"):
            total = row if row["steps"] else None  # an empty ledger still has its total row
        else:
            types.append(row)
    return {"since_seconds": since_seconds, "by_type": types, "total": total,
            "slowest": slowest, "failing": failing.result()}


def _by_type(cur: Any, params: dict[str, Any], *, all_time: bool) -> list[dict[str, Any]]:
    """stats_by_type's rows; over all time, it counts type by type (stats_step_types)."""
    step_types: list[str] = []
    if all_time:
        cur.execute(REPORTS["stats_step_types"])
        (step_types,) = cur.fetchone()
    cur.execute(REPORTS["stats_by_type"], {**params, "step_types": step_types})
    return [dict(zip(("step_type", "is_total", "steps", "success_pct", "rerun", "failing",
                      "p50_ms", "p95_ms"), row, strict=True))
            for row in cur.fetchall()]


def _failing(cur: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The most-failing groups (stats_failing), each with its step count and last error."""
    failing = rows(cur, "stats_failing", params)
    if failing:
        cur.execute(REPORTS["stats_failing_steps"], {
            **params, "types": [row["step_type"] for row in failing],
            "files": [row["target_file"] for row in failing]})
        for row, (steps, last_error) in zip(failing, cur.fetchall(), strict=True):
            row.update(steps=steps, last_error=last_error)
    return failing


def prune(target: Target, older_than_seconds: int, *, batch: int = PRUNE_BATCH,
          progress: Callable[[int], None] | None = None,
          connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> tuple[int, int]:
    """Delete the history of finished tasks idle for longer than that; return how many step
    rows and attempt rows went.

    Their attempt rows go with their step rows. Batches of ``batch`` rows, each its own
    transaction, so no lock is held for long. ``progress``: the step rows deleted so far.
    """
    steps = attempts = 0
    with db.cursor(target, connect_timeout) as cur:
        cur.execute(REPORTS["prune_cutoff"], {"seconds": older_than_seconds})
        (cutoff,) = db.one_row(cur)
        params = {"cutoff": cutoff, "batch": batch}
        while True:
            cur.execute(REPORTS["prune_batch"], params)
            step_rows, attempt_rows = db.one_row(cur)
            steps, attempts = steps + int(step_rows), attempts + int(attempt_rows)
            if progress is not None and step_rows:
                progress(steps)
            if step_rows < batch:
                break
        while True:  # attempts of tasks that never recorded a step
            cur.execute(REPORTS["prune_attempts_batch"], params)
            attempts += cur.rowcount
            if cur.rowcount < batch:
                return steps, attempts


def next_demo_task_id(target: Target) -> int:
    with db.cursor(target) as cur:
        cur.execute(REPORTS["next_demo_task_id"])
        return int(db.one_row(cur)[0])


# -- text --------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell; the columns numbered in ``right`` are right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if i in right else v.ljust(w)
                 for i, (v, w) in enumerate(zip(values, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _when(value: Any) -> str:
    """An ISO timestamp from row_to_json, to the second."""
    return str(value or "").replace("T", " ")[:19]


def status_lines(task: dict[str, Any]) -> list[str]:
    """A task as ``history.load_task`` returns it: a summary, the attempts, the steps, the errors."""
    steps, attempts = task["steps"], task["attempts"]
    lines = [_summary(task), ""]
    if attempts:
        lines += table(("attempt", "outcome", "ran", "skipped", "failed", "resumed at", "host/pid",
                        "started", "ended"),
                       [(a["attempt"], history.shown_outcome(a), history.ranges(a["ran"]),
                         history.ranges(a["skipped"]), history.ranges(a["failed"]), a["resumed_at"],
                         _holder(a), _when(a["started_at"]), _when(a["ended_at"])) for a in attempts],
                       right=(0, 5))
        lines += [_stop_line(a) for a in attempts if _stop_line(a)]
        lines.append("")
    else:
        lines += ["no attempt recorded: attempt unknown for every step (written before the attempt "
                  "ledger, or outside a checkpointed call)", ""]
    rows = [(s["step_number"], s["step_type"], s["target_file"], s["execution_result"],
             s["execution_time_ms"], "unknown" if s["attempt"] is None else s["attempt"],
             _when(s["updated_at"])) for s in steps]
    if rows:
        lines += table(("step", "type", "target", "result", "ms", "attempt", "when"), rows,
                       right=(0, 4, 5))
        if attempts and any(s["attempt"] is None for s in steps):
            lines.append("attempt unknown: the row was written outside every recorded attempt "
                         "(before the attempt ledger, or by the host's own helpers)")
    for s in steps:
        if s["execution_result"] != "success" and s["error_detail"]:
            first = str(s["error_detail"]).strip().splitlines() or [""]
            lines.append(f"step {s['step_number']} {s['execution_result']}: {first[0]}")
    return lines


def _holder(attempt: dict[str, Any]) -> str:
    host, pid = attempt["host"], attempt["pid"]
    return f"{host or '?'}/{pid if pid is not None else '?'}" if host or pid is not None else ""


def _stop_line(attempt: dict[str, Any]) -> str:
    step = history.stopped_at(attempt)
    if attempt["stale"]:
        return (f"attempt {attempt['attempt']} is still marked running, but its lease expired "
                f"{_when(attempt['lease_until'])}: its holder is gone (dead)"
                + (f", in step {step}" if step is not None else ""))
    if attempt["outcome"] in ("died", "lost") and step is not None:
        return f"attempt {attempt['attempt']} {attempt['outcome']} in step {step}"
    return ""


def _summary(task: dict[str, Any]) -> str:
    task_id, checkpoint, steps, state = task["task_id"], task["checkpoint"], task["steps"], task["state"]
    ok = sum(1 for s in steps if s["execution_result"] == "success")
    recorded = f"{len(steps)} step(s) recorded, {ok} succeeded"
    counted = f"; {len(task['attempts'])} attempt(s)" if task["attempts"] else ""
    if checkpoint is None:
        why = "removed when it finished" if state == "finished" else "finished, or never started"
        return f"task {task_id}: {state}; {recorded}; no checkpoint row ({why}){counted}"
    data = checkpoint.get("checkpoint_data") or {}
    attempts = data.get("attempts") if isinstance(data, dict) else None
    total = checkpoint.get("total_steps")
    last = checkpoint["last_completed_step"]
    of = f" of {total}" if total is not None else ""
    return (f"task {task_id}: {state}; {recorded}; checkpoint: attempt {attempts or '?'}, "
            f"resume at step {last + 1}{of} (last_completed_step={last}), "
            f"updated {_when(checkpoint.get('updated_at'))}{counted}")


def stats_lines(report: dict[str, Any]) -> list[str]:
    since = report["since_seconds"]
    window = "all time" if since is None else f"the last {_duration_text(since)}"
    total = report["total"]
    if total is None:
        return [f"no steps recorded ({window})"]
    lines = [f"{total['steps']} step(s) recorded ({window})", ""]
    rows = [(r["step_type"], r["steps"], f"{r['success_pct']:.1f}%", r["rerun"], r["failing"],
             r["p50_ms"], r["p95_ms"]) for r in [*report["by_type"], {**total, "step_type": "all"}]]
    lines += table(("type", "steps", "success", "re-run", "failing", "p50 ms", "p95 ms"), rows,
                   right=(1, 2, 3, 4, 5, 6))
    lines += ["", "re-run: succeeded on a later attempt after failing (or after its content changed)"]
    if report["slowest"]:
        lines += ["", "slowest steps:"]
        lines += table(("task", "step", "type", "target", "result", "ms"),
                       [tuple(r.values()) for r in report["slowest"]], right=(0, 1, 5))
    if report["failing"]:
        lines += ["", "most-failing steps (failing now, or succeeded only on a re-run):"]
        lines += table(("type", "target", "failing", "re-run", "of", "last error"),
                       [(r["step_type"], r["target_file"], r["failing"], r["rerun"], r["steps"],
                         r["last_error"]) for r in report["failing"]], right=(2, 3, 4))
    return lines


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


__all__ = ["PRUNE_BATCH", "concurrently", "next_demo_task_id", "parse_duration", "prune", "rows", "stats",
           "stats_lines", "status_lines", "table"]
