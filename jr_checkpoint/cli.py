"""``jr-checkpoint``: the command line. The only module that prints for users."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import cli_ledger, interrupts, launcher, migrate, patching, schema
from . import dsn as dsn_module
from .cli_common import PREFIX, add_database_options, confirm, out, seconds
from .errors import CheckpointError, ConfigurationError, PatchConflict

if TYPE_CHECKING:  # argparse's own type for what add_subparsers() returns
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def cmd_migrate(args: argparse.Namespace) -> int:
    with migrate.target(args.dsn, args.host_root) as (target, named):
        print(f"{PREFIX} Target: {named}", flush=True)
        return _migrate(args, target)


def _shape_lines(notes: list[str], problems: list[str], suffix: str = "") -> None:
    """How the live tables differ from the seed's: what the ledger lives with on stdout,
    what it cannot write around on stderr."""
    for line in notes:
        print(f"{PREFIX} {line}{suffix}")
    for line in problems:
        print(f"{PREFIX} {line}{suffix}", file=sys.stderr)


def _migrate(args: argparse.Namespace, target: dsn_module.Target) -> int:
    if args.check:
        problems, notes = schema.check(target, args.connect_timeout)
        _shape_lines(notes, problems)
        if problems:
            return 1
        print(f"{PREFIX} Schema OK: {', '.join(schema.TABLE_NAMES)} at {target.describe()}")
        return 0
    if args.drop:
        names = schema.TABLE_NAMES
        if not confirm(f"Drop {', '.join(names[:-1])} and {names[-1]} at {target.describe()}?", args.yes):
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
    _shape_lines(notes, problems, " (left as it is)")
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


def _add_patch_command(commands: Subcommands) -> None:
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
    launcher.exec_command(args.command, args.dsn, wait=args.wait, allow_unchecked=args.allow_unchecked,
                          on_task_finished=args.on_task_finished)
    return 0  # pragma: no cover (exec_command returns only by raising)


def _add_run_command(commands: Subcommands) -> None:
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
    parser.add_argument("--wait", type=seconds, metavar="SECONDS",
                        help="wait this long for another worker to finish a task it holds, instead "
                        "of refusing the task at once (passed as $JR_CHECKPOINT_WAIT)")
    parser.add_argument("--on-task-finished", metavar="MODULE:FUNCTION",
                        help="call FUNCTION(trajectory, outcome) once per checkpointed call that "
                        "ends (finished, failed, exhausted); imported at its first call, so it may "
                        "live where the worker's own sys.path finds it")
    parser.add_argument("--allow-unchecked", action="store_true",
                        help="start COMMAND even when its Python cannot import or install "
                        "jr-checkpoint (one line on stderr, then it runs without checkpoints)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    parser.set_defaults(func=cmd_run)


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
        with serve.ledger(args.dsn, args.host_root, args.data_dir, out) as target:
            serve.serve(target, args.host, args.port, out, args.connect_timeout)
    except KeyboardInterrupt:  # waitress takes Ctrl-C itself; this is Ctrl-C during start-up
        pass
    out("stopped")
    return 0


def _add_serve_command(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "serve", help="the step-reward dashboard in a browser (read-only)",
        description="Serve the dashboard's pages and JSON on a WSGI server (waitress), on localhost "
        "by default. With no database configured it serves the demo's embedded PostgreSQL.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765,
                        help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR", help="the embedded server's data directory, when no "
                        "database is configured (default: the demo's)")
    add_database_options(parser)
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
    add_database_options(migrate_parser)
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
    cli_ledger.add_commands(commands)
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
            status: int = args.func(args)
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
