"""Create, check and drop the two checkpoint tables (``sql/schema.sql``) and the ledger's
functions (``sql/functions.sql``)."""

from __future__ import annotations

import re
from typing import NamedTuple

from . import db
from .db import DEFAULT_CONNECT_TIMEOUT, Endpoint
from .shape import read_shape
from .sql import ADMIN, FUNCTIONS, QUERIES, SCHEMA, TABLES, function_signatures

#: First key of the advisory lock that serializes migrations (transaction-scoped); the
#: dashboard's task states ask whether a migration holds it.
LOCK_NAMESPACE = 0x6A72636B  # "jrck"

TABLE_NAMES = tuple(TABLES)

#: The functions a worker calls (those of sql/functions.sql that a query of sql/queries.sql
#: calls, not drops), as ``name(argument types)``: ``migrate --check`` verifies that each
#: exists and that the connecting role may EXECUTE it.
WORKER_FUNCTIONS: tuple[str, ...] = tuple(
    signature for name, signature in function_signatures(FUNCTIONS).items()
    if any(re.search(rf"(?<!EXISTS ){name}\(", query) for query in QUERIES.values()))


class Migration(NamedTuple):
    """What ``migrate`` did: each table's row count, the tables it created, and one line per
    difference it found between a table that was there and the seed's (it leaves such tables
    as they are); ``problems`` are those the ledger cannot write around."""

    counts: dict[str, int]
    created: list[str]
    notes: list[str]
    problems: list[str]
    old_functions: int = 0  # the previous release's, kept for its workers (``drop_old``)


class Check(NamedTuple):
    """``migrate --check``: what stops the ledger (``problems``) and what it adapts to or may
    ignore (``notes``), one line each."""

    problems: list[str]
    notes: list[str]


def create_tables(target: Endpoint,
                  connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> dict[str, int]:
    """Create the tables and indexes if missing; return each table's row count."""
    return migrate(target, connect_timeout).counts


def migrate(target: Endpoint, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> Migration:
    """Create the tables, indexes and functions that are missing (see :class:`Migration`).

    A table that exists keeps its columns, whatever their shape: this never alters or drops
    a column of a production table; what differs from the seed is reported instead.

    All or nothing, in one transaction. ``CREATE ... IF NOT EXISTS`` is not safe when two
    sessions run it at once (both pass the check, one fails on a unique index of the
    catalog), so the transaction first takes an advisory lock that serializes migrations;
    what exists is read after the lock, so of several migrations at once exactly one says it
    created the tables.
    """
    with db.session(target, connect_timeout, "migration") as conn:
        with conn, conn.cursor() as cur:  # commits, or rolls back on any error
            cur.execute(QUERIES["migration_lock"], {"namespace": LOCK_NAMESPACE})
            cur.execute(QUERIES["live_shape"])
            before = {row[0] for row in cur.fetchall()}
            cur.execute(SCHEMA)
            cur.execute(FUNCTIONS)
            shape = read_shape(cur)
            cur.execute(QUERIES["old_functions"])
            (old,) = db.one_row(cur)
        # Counted after the commit: the migration's locks (a new table, the functions) are
        # gone by then, so a big table's count never holds up the workers that write it.
        conn.autocommit = True
        with conn.cursor() as cur:
            counts = {table: db.count_rows(cur, table) for table in TABLE_NAMES}
    return Migration(counts, [table for table in TABLE_NAMES if table not in before],
                     list(shape.notes), list(shape.problems), old)


def drop_old_functions(target: Endpoint, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> int:
    """Drop the previous release's functions (``migrate --drop-old``); how many there were.

    Its workers then fail to record (and run unchecked): run it once none is left."""
    with db.transaction(target, connect_timeout, "drop") as cur:
        cur.execute(QUERIES["migration_lock"], {"namespace": LOCK_NAMESPACE})
        cur.execute(QUERIES["old_functions"])
        (old,) = db.one_row(cur)
        cur.execute(QUERIES["drop_old_functions"])
    return int(old)


def check(target: Endpoint, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> Check:
    """``migrate --check``: the schema's problems, else what the connecting role lacks (one
    line); and the differences the ledger lives with."""
    with db.transaction(target, connect_timeout, "schema check") as cur:
        shape = read_shape(cur)
        return Check(list(shape.problems) or _privilege_problems(cur), list(shape.notes))


def _privilege_problems(cur: db.Cursor) -> list[str]:
    """``[]``, or one line naming every privilege a worker needs and the role lacks.

    A role that may SELECT but not INSERT, or INSERT without USAGE on the SERIAL's sequence,
    would otherwise record nothing, with one warning per call, while the schema looks fine.
    """
    cur.execute(ADMIN["missing_privileges"],
                {"tables": list(TABLE_NAMES), "functions": list(WORKER_FUNCTIONS)})
    rows = cur.fetchall()
    cur.execute(ADMIN["current_role"])
    (role,) = db.one_row(cur)
    missing = [f"{privilege} on {name}" if kind == "table" else f"{privilege} on {kind} {name}"
               for privilege, kind, name in rows if privilege is not None]
    problems = [f"function {name} is missing" for privilege, _, name in rows if privilege is None]
    if missing:
        problems.append(f"role {role} lacks: {', '.join(missing)}")
    return problems


def drop_tables(target: Endpoint, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> None:
    with db.transaction(target, connect_timeout, "drop") as cur:
        cur.execute(QUERIES["migration_lock"], {"namespace": LOCK_NAMESPACE})
        cur.execute(QUERIES["drop_tables"])
