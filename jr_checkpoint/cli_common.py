"""What the command line's commands share: the database options, a confirmation, a line out."""

from __future__ import annotations

import argparse
import sys

from . import dsn as dsn_module
from .errors import CheckpointError

PREFIX = "[Checkpoint Migration]"


def add_database_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("database")
    group.add_argument("--dsn", help=f"libpq DSN or URI (default: ${dsn_module.ENV_DSN}, "
                       "the host's lib.secrets_loader, then the PG* variables)")
    group.add_argument("--host-root", metavar="DIR",
                       help="put DIR (the host's root, e.g. /ganuda) on sys.path to find lib.secrets_loader")
    group.add_argument("--connect-timeout", type=float, default=dsn_module.DEFAULT_CONNECT_TIMEOUT,
                       metavar="SECONDS", help="give up connecting after this long (default: %(default)s)")


def target(args: argparse.Namespace) -> dsn_module.Target:
    return dsn_module.resolve(args.dsn, host_root=args.host_root)


def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise CheckpointError(f"{question} Refusing without --yes (stdin is not a terminal).")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def out(line: str = "") -> None:
    print(line, flush=True)


def seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, not {value!r}")
    return seconds
