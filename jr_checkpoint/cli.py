"""``jr-checkpoint``: the command line. The only module that prints for users."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import dsn as dsn_module
from . import patching, schema
from .errors import CheckpointError, PatchConflict

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
    target = _target(args)
    if args.check:
        problems = schema.check_tables(target, args.connect_timeout)
        for problem in problems:
            print(f"{PREFIX} {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"{PREFIX} Schema OK: {', '.join(schema.TABLE_NAMES)} at {target.describe()}")
        return 0
    if args.drop:
        if not _confirm(f"Drop {' and '.join(schema.TABLE_NAMES)} at {target.describe()}?", args.yes):
            print(f"{PREFIX} Nothing dropped.")
            return 1
        schema.drop_tables(target, args.connect_timeout)
        print(f"{PREFIX} Tables dropped: {', '.join(schema.TABLE_NAMES)}")
        return 0
    counts = schema.create_tables(target, args.connect_timeout)
    print(f"{PREFIX} Tables created: {', '.join(counts)}")
    for table, count in counts.items():
        print(f"{PREFIX} {table}: {count} rows")
    print(f"{PREFIX} Done — For Seven Generations")
    return 0


def _patch_status(outcome: patching.Outcome, reverse: bool, written: bool) -> str:
    if outcome.state == patching.CONFLICT:
        return f"conflict: {outcome.reason}"
    if outcome.state == patching.DONE:
        return "not applied" if reverse else "already applied"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jr-checkpoint",
        description="Step-level checkpointing and crash recovery for the Jr executor.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    migrate = commands.add_parser("migrate", help="create the checkpoint tables (idempotent)",
                                  description="Create jr_step_rewards and jr_task_checkpoints.")
    _add_database_options(migrate)
    mode = migrate.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 0 if both tables exist with the seed's columns, else 1")
    mode.add_argument("--drop", action="store_true", help="drop both tables (asks unless --yes)")
    migrate.add_argument("--yes", action="store_true", help="do not ask before --drop")
    migrate.set_defaults(func=cmd_migrate)
    _add_patch_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CheckpointError as exc:
        print(f"jr-checkpoint: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("jr-checkpoint: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
