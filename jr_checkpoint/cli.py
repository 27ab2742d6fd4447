"""``jr-checkpoint``: the command line. The only module that prints for users."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import demo, embedded, history, interrupts, launcher, migrate, patching, reports, schema
from . import dsn as dsn_module
from .errors import CheckpointError, ConfigurationError, DatabaseUnavailable, PatchConflict, TaskLockedError
from .steps import parse_task_id
from .store import CheckpointStore

PREFIX = "[Checkpoint Migration]"


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("database")
    group.add_argument("--dsn", help=f"libpq DSN or URI (default: ${dsn_module.ENV_DSN}, "
                       "the host's lib.secrets_loader, then the PG* variables)")
    group.add_argument("--host-root", metavar="DIR",
                       help="put DIR (the host's root, e.g. /ganuda) on sys.path to find lib.secrets_loader")
    group.add_argument("--connect-timeout", type=float, default=dsn_module.DEFAULT_CONNECT_TIMEOUT,
                       metavar="SECONDS", help="give up connecting after this long (default: %(default)s)")


def _target(args: argparse.Namespace) -> dsn_module.Target:
    return dsn_module.resolve(args.dsn, host_root=args.host_root)


def _confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise CheckpointError(f"{question} Refusing without --yes (stdin is not a terminal).")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_migrate(args: argparse.Namespace) -> int:
    with migrate.target(args.dsn, args.host_root) as (target, named):
        print(f"{PREFIX} Target: {named}", flush=True)
        return _migrate(args, target)


def _migrate(args: argparse.Namespace, target: dsn_module.Target) -> int:
    if args.check:
        problems, notes = schema.check(target, args.connect_timeout)
        for note in notes:
            print(f"{PREFIX} {note}")
        for problem in problems:
            print(f"{PREFIX} {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"{PREFIX} Schema OK: {', '.join(schema.TABLE_NAMES)} at {target.describe()}")
        return 0
    if args.drop:
        names = schema.TABLE_NAMES
        if not _confirm(f"Drop {', '.join(names[:-1])} and {names[-1]} at {target.describe()}?", args.yes):
            print(f"{PREFIX} Nothing dropped.")
            return 1
        schema.drop_tables(target, args.connect_timeout)
        print(f"{PREFIX} Tables dropped: {', '.join(schema.TABLE_NAMES)}")
        return 0
    if args.drop_old:
        dropped = schema.drop_old_functions(target, args.connect_timeout)
        print(f"{PREFIX} The previous release's functions: "
              + (f"{dropped} dropped" if dropped else "none left"))
        return 0
    counts, created, notes, problems, old = schema.migrate(target, args.connect_timeout)
    if created:
        print(f"{PREFIX} Tables created: {', '.join(created)}")
    if len(created) < len(counts):
        print(f"{PREFIX} Tables already present: {', '.join(t for t in counts if t not in created)}")
    for table, count in counts.items():
        print(f"{PREFIX} {table}: {count} rows")
    for line in notes:
        print(f"{PREFIX} {line} (left as it is)")
    for line in problems:
        print(f"{PREFIX} {line} (left as it is)", file=sys.stderr)
    if problems:
        return 1
    if old:
        print(f"{PREFIX} The previous release's functions are kept for its workers: run "
              f"`jr-checkpoint migrate --drop-old` once none of them is left")
    print(f"{PREFIX} Done — For Seven Generations")
    return 0


def _patch_status(outcome: patching.Outcome, reverse: bool, written: bool) -> str:
    if outcome.state == patching.CONFLICT:
        return f"conflict: {outcome.reason}"
    if outcome.state == patching.DONE:
        return "not applied" if reverse else "already applied"
    if outcome.state == patching.PRESENT:
        return (f"not this patch's text, left alone ({outcome.reason} itself)" if reverse
                else f"already present ({outcome.reason})")
    if written:
        return "reverted" if reverse else "applied"
    return "reverts cleanly" if reverse else "applies cleanly"


def cmd_patch(args: argparse.Namespace) -> int:
    """check changes nothing; apply and revert write every changed file or none."""
    plan = patching.plan(args.root, patching.load_patches(args.patches),
                         reverse=args.action == "revert")
    written = [] if args.action == "check" or plan.conflicts else patching.write(plan)
    for outcome in plan.outcomes:
        print(f"{outcome.block.label()}: {_patch_status(outcome, plan.reverse, bool(written))}")
        for line in outcome.context:
            print(f"    {line}")
    if plan.conflicts:
        if args.action == "check":
            return 1
        raise PatchConflict(f"refused: {len(plan.conflicts)} of {len(plan.outcomes)} blocks "
                            f"conflict; no file under {plan.root} was changed")
    if args.action != "check":
        verb = "Reverted" if plan.reverse else "Patched"
        print(f"{verb} {len(written)} file(s) under {plan.root}" if written
              else f"Nothing to change under {plan.root}")
    return 0


def _add_patch_command(commands) -> None:
    patch = commands.add_parser(
        "patch", help="check, apply or revert the seed's literal SEARCH/REPLACE edits",
        description="Edit the host's source with SEARCH/REPLACE patch files, all or nothing.")
    actions = patch.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("check", "report each block; change nothing; exit 1 on a conflict"),
                         ("apply", "apply every block, or refuse (exit 1) and change nothing"),
                         ("revert", "undo applied blocks, or refuse (exit 1) and change nothing")):
        parser = actions.add_parser(action, help=text, description=text)
        parser.add_argument("--root", required=True, metavar="DIR",
                            help="the host's root (e.g. /ganuda); patch paths are relative to it")
        parser.add_argument("patches", nargs="*", metavar="PATCH",
                            help="a patch file, or the name of a bundled patch (default: every "
                            "bundled patch not marked optional)")
        parser.set_defaults(func=cmd_patch)


def cmd_run(args: argparse.Namespace) -> int:
    """Becomes COMMAND (exec): returns only when COMMAND cannot start."""
    sys.stdout.flush()
    sys.stderr.flush()
    launcher.exec_command(args.command, args.dsn, wait=args.wait, allow_unchecked=args.allow_unchecked)
    return 0  # pragma: no cover (exec_command returns only by raising)


def _add_run_command(commands) -> None:
    parser = commands.add_parser(
        "run", help="run COMMAND with jr-checkpoint installed at Python start-up (no edit to the host)",
        usage=launcher.USAGE,
        description="Run COMMAND (e.g. python3 -u jr_queue_worker.py 'Jr Name') in place of this "
        "process, with a sitecustomize on PYTHONPATH that calls jr_checkpoint.install() in every "
        "Python it starts. Exit status and signals are COMMAND's own. 127: COMMAND not found; "
        f"126: not executable; {launcher.UNCHECKED_EXIT}: its Python cannot install jr-checkpoint "
        "(not started).")
    parser.add_argument("--dsn", help=f"the checkpoint database, passed as ${dsn_module.ENV_DSN} "
                        "(default: the library's usual resolution, in the command's environment)")
    parser.add_argument("--wait", type=_seconds, metavar="SECONDS",
                        help="wait this long for another worker to finish a task it holds, instead "
                        "of refusing the task at once (passed as $JR_CHECKPOINT_WAIT)")
    parser.add_argument("--allow-unchecked", action="store_true",
                        help="start COMMAND even when its Python cannot import or install "
                        "jr-checkpoint (one line on stderr, then it runs without checkpoints)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    parser.set_defaults(func=cmd_run)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, not {value!r}")
    return seconds


# -- demo, and looking into the ledger: status, stats, reset, prune ----------------------------

def _out(line: str = "") -> None:
    print(line, flush=True)


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
        deleted = reports.prune(target, seconds, batch=args.batch, progress=progress,
                                connect_timeout=args.connect_timeout)
    if tty and deleted:
        print(file=sys.stderr)
    print(f"pruned {deleted} step row(s) of finished tasks untouched for more than {args.older_than}")
    return 0


def _add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR", help="the demo's embedded server's data directory, "
                        "used when no database is configured (default: the demo's)")


def _add_ledger_commands(commands) -> None:
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
    _add_database_options(status)
    _add_data_dir_option(status)
    status.set_defaults(func=cmd_status)

    stats = commands.add_parser(
        "stats", help="per step type: count, success rate, re-runs, p50/p95 ms; slowest, most failing",
        description="Figures over the whole ledger (or a recent window), computed by PostgreSQL.")
    stats.add_argument("--since", metavar="DURATION", help="only steps updated in the last DURATION "
                       "(30s, 15m, 2h, 7d)")
    stats.add_argument("--top", type=_count, default=5, metavar="N", help="rows in the slowest and "
                       "most-failing lists (default: %(default)s)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    _add_database_options(stats)
    _add_data_dir_option(stats)
    stats.set_defaults(func=cmd_stats)

    reset = commands.add_parser(
        "reset", help="forget a task so that it runs from scratch",
        description="Delete a task's step rows and checkpoint (asks first). Exit status: 0 reset, "
        "1 nothing reset (unknown task, or the answer was no), 2 refused (a worker is running "
        "the task, or no terminal to ask and no --yes).")
    reset.add_argument("task_id", type=_task_id, metavar="TASK_ID")
    reset.add_argument("--yes", action="store_true", help="do not ask")
    _add_database_options(reset)
    reset.set_defaults(func=cmd_reset)

    prune = commands.add_parser(
        "prune", help="delete the step history of finished tasks older than a duration",
        description="Delete the step rows of finished tasks (no checkpoint row) none of whose steps "
        "changed for DURATION, in batches, each its own transaction.")
    prune.add_argument("--older-than", required=True, metavar="DURATION", help="30s, 15m, 2h, 7d")
    prune.add_argument("--batch", type=int, default=reports.PRUNE_BATCH, metavar="ROWS",
                       help="rows per statement (default: %(default)s)")
    _add_database_options(prune)
    prune.set_defaults(func=cmd_prune)


def _version() -> str:
    try:
        return importlib.metadata.version("jr-checkpoint")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


# -- serve: the dashboard on its own ------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    """The dashboard's pages on waitress, until Ctrl-C (which stops the embedded server too)."""
    try:
        from .web import serve
    except ImportError as exc:
        raise ConfigurationError(f"the dashboard needs Flask and waitress ({exc.name} is missing): "
                                 "pip install 'jr-checkpoint[web]'") from exc
    if not 0 <= args.port <= 65535:
        raise ConfigurationError(f"--port must be from 0 to 65535, not {args.port}")
    try:
        with serve.ledger(args.dsn, args.host_root, args.data_dir, _out) as target:
            serve.serve(target, args.host, args.port, _out, args.connect_timeout)
    except KeyboardInterrupt:  # waitress takes Ctrl-C itself; this is Ctrl-C during start-up
        pass
    _out("stopped")
    return 0


def _add_serve_command(commands) -> None:
    parser = commands.add_parser(
        "serve", help="the step-reward dashboard in a browser (read-only)",
        description="Serve the dashboard's pages and JSON on a WSGI server (waitress), on localhost "
        "by default. With no database configured it serves the demo's embedded PostgreSQL.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765,
                        help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR", help="the embedded server's data directory, when no "
                        "database is configured (default: the demo's)")
    _add_database_options(parser)
    parser.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jr-checkpoint",
        description="Step-level checkpointing and crash recovery for the Jr executor.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    migrate_parser = commands.add_parser(
        "migrate", help="create the checkpoint tables (idempotent)",
        description="Create jr_step_rewards and jr_task_checkpoints. The first line names the "
        "database and how it was found (--dsn, $JR_CHECKPOINT_DSN, the host's lib.secrets_loader, "
        "the PG* variables, or the demo's embedded server when nothing is configured and no host "
        "root exists). A host root given or found whose loader fails is an error (exit 2).")
    _add_database_options(migrate_parser)
    mode = migrate_parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 0 if both tables exist with the seed's columns and the connecting "
                      "role may do what a worker does (read, write, use their sequences), else 1")
    mode.add_argument("--drop", action="store_true", help="drop the tables (asks unless --yes)")
    mode.add_argument("--drop-old", action="store_true",
                      help="drop the previous release's functions, kept by migrate for its workers "
                      "during a rolling upgrade: run it once none of them is left")
    migrate_parser.add_argument("--yes", action="store_true", help="do not ask before --drop")
    migrate_parser.set_defaults(func=cmd_migrate)
    _add_patch_command(commands)
    _add_run_command(commands)
    _add_ledger_commands(commands)
    _add_serve_command(commands)
    return parser


def _stdout_broken() -> bool:
    """Was it standard output that failed? Write to it again (a blank line if it works)."""
    try:
        print(flush=True)
    except OSError:
        return True
    return False


def _say(message: str) -> None:
    with contextlib.suppress(OSError):  # a closed terminal: nobody to tell
        print(f"jr-checkpoint: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with interrupts.ending_on_signals(_say):
        try:
            status = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at exit
            return status
        except CheckpointError as exc:
            _say(f"error: {exc}")
            return exc.exit_code
        except KeyboardInterrupt:
            _say(interrupts.describe(signal.SIGINT))
            return 128 + signal.SIGINT
        except interrupts.Stopped as exc:
            _say(interrupts.describe(exc.signum))
            return 128 + exc.signum
        except BrokenPipeError:
            # `jr-checkpoint status 7 --json | head`: the reader left; say nothing more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except OSError as exc:
            if not _stdout_broken():
                raise
            # `jr-checkpoint demo > /dev/full`: one line, and no second failure at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            _say(f"error: cannot write to standard output: {exc.strerror or exc}")
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
