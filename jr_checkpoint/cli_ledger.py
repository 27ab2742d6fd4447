"""``jr-checkpoint demo``, and looking into the ledger: ``status``, ``stats``, ``reset``, ``prune``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from . import demo, embedded, history, interrupts, reports
from . import dsn as dsn_module
from .cli_common import add_database_options as _add_database_options
from .cli_common import confirm as _confirm
from .cli_common import out as _out
from .cli_common import target as _target
from .errors import ConfigurationError, DatabaseUnavailable, TaskLockedError
from .steps import parse_task_id
from .store import CheckpointStore


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more: {text!r}")
    return value


def _task_id(text: str) -> int:
    value = parse_task_id(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"task id must be an INTEGER (-2147483648..2147483647): {text!r}")
    return value


@contextlib.contextmanager
def _ledger(args: argparse.Namespace) -> Iterator[dsn_module.Target]:
    """The configured database; with none configured, the demo's embedded server if it has data."""
    target = embedded.configured(args.dsn, args.host_root)
    data_dir = _data_dir(args)
    if target is None and embedded.has_data(data_dir) and embedded.available():
        print(f"(no database configured: using the demo's embedded PostgreSQL in {data_dir})",
              file=sys.stderr)
        with embedded.server(data_dir) as served, interrupts.serving():
            yield served
        return
    yield target if target is not None else _target(args)


def _data_dir(args: argparse.Namespace) -> Path:
    given = getattr(args, "data_dir", None)
    return Path(given).expanduser() if given else embedded.default_data_dir()


@contextlib.contextmanager
def _checkpoint_log_lines() -> Iterator[None]:
    """Show the library's [CHECKPOINT] lines (INFO, logger jr_checkpoint) while the demo runs."""
    logger = logging.getLogger("jr_checkpoint")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("    %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    target = embedded.configured(args.dsn, args.host_root)
    if target is not None:
        _out(f"database: {target.describe()} (from {target.source})")
        return _run_demo(target, args, started, " (with the same database options)")
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else embedded.default_data_dir()
    with embedded.server(data_dir) as served, interrupts.serving():
        _out(f"database: embedded PostgreSQL, data kept in {data_dir} (the server stops when the demo ends)")
        return _run_demo(served, args, started, f" --data-dir {data_dir}" if args.data_dir else "")


def _run_demo(target: dsn_module.Target, args: argparse.Namespace, started: float,
              status_hint: str | None) -> int:
    with _checkpoint_log_lines():
        report = demo.run(target, _out, args.connect_timeout)
    outcomes = zip(report.steps, report.first, report.second, strict=True)
    rows = [(n, step["type"], step.get("path", ""), first, second)
            for n, (step, first, second) in enumerate(outcomes)]
    _out()
    for line in reports.table(("step", "type", "target", "attempt 1", "attempt 2"), rows, right=(0,)):
        _out(line)
    _out()
    _out(f"resume point: step {report.resume_at} (the checkpoint left by the crash: "
         f"last_completed_step={report.resume_at - 1}, attempts={report.attempts_before_retry})")
    right = report.final_config == demo.FINAL_CONFIG
    done = ("finished: its checkpoint row is gone, its step rows stay as history" if report.finished
            else "NOT finished")
    _out(f"task {report.task_id}: {done}")
    _out()
    _out(f"{demo.CONFIG} after attempt 2 ({'every edit applied exactly once' if right else 'WRONG'}):")
    for line in report.final_config.splitlines():
        _out(f"    {line}")
    _out()
    _out(f"done in {time.monotonic() - started:.1f} s")
    if status_hint is not None:
        _out(f"the ledger: jr-checkpoint status {report.task_id}{status_hint}")
    return 0 if report.finished and right else 1


@contextlib.contextmanager
def _report_ledger(args: argparse.Namespace) -> Iterator[dsn_module.Target]:
    """``_ledger``; with no database configured and none running, one line on what to do."""
    nothing = (embedded.configured(args.dsn, args.host_root) is None
               and not embedded.has_data(_data_dir(args)))
    try:
        with _ledger(args) as target:
            yield target
    except DatabaseUnavailable as exc:
        if not nothing:
            raise
        raise ConfigurationError("no database configured, and none running on this machine: run "
                                 "`jr-checkpoint demo` first, or give --dsn") from exc


def cmd_status(args: argparse.Namespace) -> int:
    with _report_ledger(args) as target:
        task = history.load_task(target, args.task_id, connect_timeout=args.connect_timeout)
    if task is None:
        print(f"task {args.task_id}: nothing recorded at {target.describe()}", file=sys.stderr)
        return 1
    lines = [json.dumps(task, indent=2, default=str)] if args.json else reports.status_lines(task)
    for line in lines:
        print(line)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    since = reports.parse_duration(args.since) if args.since is not None else None
    with _report_ledger(args) as target:
        report = reports.stats(target, since, limit=args.top, connect_timeout=args.connect_timeout)
    lines = [json.dumps(report, indent=2, default=str)] if args.json else reports.stats_lines(report)
    for line in lines:
        print(line)
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    task_id = args.task_id
    with _ledger(args) as target:
        store = CheckpointStore(target, connect_timeout=args.connect_timeout)
        try:
            task = store.load_task(task_id)
            if task is None:
                print(f"task {task_id}: nothing recorded at {target.describe()}", file=sys.stderr)
                return 1
            question = (f"Forget task {task_id} ({len(task['steps'])} step row(s)"
                        f"{' and its checkpoint' if task['checkpoint'] else ''}) at {target.describe()}, "
                        "so that it runs from scratch?")
            if not _confirm(question, args.yes):
                print("Nothing reset.")
                return 1
            # Take the task first (as a worker would), so a task being run is never reset.
            if store.begin_task(task_id, wait=0) is None:
                raise TaskLockedError(f"task {task_id} is being run by another worker; not resetting it")
            steps, _ = store.forget_task(task_id)  # the checkpoint row, and our lease, go with it
            checkpoints = 1 if task["checkpoint"] else 0
        finally:
            store.close()
    print(f"task {task_id}: forgot {steps} step row(s) and {checkpoints} checkpoint row(s); "
          "its next run starts from scratch")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    seconds = reports.parse_duration(args.older_than)
    if args.batch < 1:
        raise ConfigurationError(f"--batch must be at least 1, not {args.batch}")
    tty = sys.stderr.isatty()

    def progress(deleted: int) -> None:
        if tty:
            print(f"\rpruned {deleted} row(s)...", end="", file=sys.stderr, flush=True)

    with _ledger(args) as target:
        steps, attempts = reports.prune(target, seconds, batch=args.batch, progress=progress,
                                        connect_timeout=args.connect_timeout)
    if tty and steps:
        print(file=sys.stderr)
    print(f"pruned {steps} step row(s) and {attempts} attempt row(s) of finished tasks untouched for "
          f"more than {args.older_than}")
    return 0


def _add_ledger_options(parser: argparse.ArgumentParser) -> None:
    """What :func:`_ledger` reads: the configured database, else the demo's embedded server."""
    _add_database_options(parser)
    parser.add_argument("--data-dir", metavar="DIR", help="the demo's embedded server's data directory, "
                        "used when no database is configured (default: the demo's)")


def _add_ledger_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo_parser = commands.add_parser(
        "demo", help="crash a sample task for real (SIGKILL) and watch its retry resume",
        description="Run a six-step sample task that edits files, kill it with SIGKILL in the middle "
        "of step 3, retry it, and show which steps ran and which were skipped. With no database "
        "configured it uses the embedded PostgreSQL (the 'embedded' extra).")
    _add_database_options(demo_parser)
    demo_parser.add_argument("--data-dir", metavar="DIR", help="the embedded server's data directory "
                             "(default: the per-user data dir, e.g. ~/.local/share/jr-checkpoint/pgdata)")
    demo_parser.set_defaults(func=cmd_demo)

    status = commands.add_parser("status", help="one task: its attempts, its steps and its checkpoint",
                                 description="Show a task's attempts (which steps each ran, skipped "
                                 "and failed), every recorded step, and its checkpoint.")
    status.add_argument("task_id", type=_task_id, metavar="TASK_ID")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _add_ledger_options(status)
    status.set_defaults(func=cmd_status)

    stats = commands.add_parser(
        "stats", help="per step type: count, success rate, re-runs, p50/p95 ms; slowest, most failing",
        description="Figures over the whole ledger (or a recent window), computed by PostgreSQL.")
    stats.add_argument("--since", metavar="DURATION", help="only steps updated in the last DURATION "
                       "(30s, 15m, 2h, 7d)")
    stats.add_argument("--top", type=_count, default=5, metavar="N", help="rows in the slowest and "
                       "most-failing lists (default: %(default)s)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    _add_ledger_options(stats)
    stats.set_defaults(func=cmd_stats)

    reset = commands.add_parser(
        "reset", help="forget a task so that it runs from scratch",
        description="Delete a task's step rows and checkpoint (asks first). Exit status: 0 reset, "
        "1 nothing reset (unknown task, or the answer was no), 2 refused (a worker is running "
        "the task, or no terminal to ask and no --yes).")
    reset.add_argument("task_id", type=_task_id, metavar="TASK_ID")
    reset.add_argument("--yes", action="store_true", help="do not ask")
    _add_ledger_options(reset)
    reset.set_defaults(func=cmd_reset)

    prune = commands.add_parser(
        "prune", help="delete the history of finished tasks older than a duration",
        description="Delete the step rows and attempt rows of finished tasks (no checkpoint row) "
        "none of whose steps or attempts changed for DURATION, in batches, each its own transaction.")
    prune.add_argument("--older-than", required=True, metavar="DURATION", help="30s, 15m, 2h, 7d")
    prune.add_argument("--batch", type=int, default=reports.PRUNE_BATCH, metavar="ROWS",
                       help="rows per statement (default: %(default)s)")
    _add_ledger_options(prune)
    prune.set_defaults(func=cmd_prune)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_ledger_commands(commands)
