"""Create, check and drop the two checkpoint tables, from ``sql/schema.sql`` alone."""

from __future__ import annotations

from contextlib import closing

import psycopg2
from psycopg2 import sql as pgsql

from .dsn import Target, first_line
from .errors import StoreError
from .sql import QUERIES, SCHEMA, TABLES
from .store import LOCK_NAMESPACE

TABLE_NAMES = tuple(TABLES)


def create_tables(target: Target, connect_timeout: float | None = 5) -> dict[str, int]:
    """Create the tables and indexes if missing; return each table's row count.

    All or nothing, in one transaction. ``CREATE ... IF NOT EXISTS`` is not safe when two
    sessions run it at once (both pass the check, one fails on a unique index of the
    catalog), so the transaction first takes an advisory lock that serializes migrations.
    """
    with closing(target.connect(connect_timeout)) as conn:
        try:
            with conn, conn.cursor() as cur:  # commits, or rolls back on any error
                cur.execute(QUERIES["migration_lock"], {"namespace": LOCK_NAMESPACE})
                cur.execute(SCHEMA)
                counts = {}
                for table in TABLE_NAMES:
                    cur.execute(pgsql.SQL("SELECT COUNT(*) FROM {}").format(pgsql.Identifier(table)))
                    counts[table] = cur.fetchone()[0]
        except psycopg2.Error as exc:
            raise StoreError(f"migration failed at {target.describe()}: {first_line(exc)}") from exc
    return counts


def existing_tables(target: Target, connect_timeout: float | None = 5) -> set[str]:
    """Which of the two tables exist now (so that `migrate` says what it created)."""
    return {table for table, _column, _type in _columns(target, connect_timeout, "table check")}


def _columns(target: Target, connect_timeout: float | None, what: str) -> list[tuple[str, str, str]]:
    with closing(target.connect(connect_timeout)) as conn:
        try:
            with conn, conn.cursor() as cur:
                cur.execute(QUERIES["table_columns"])
                return cur.fetchall()
        except psycopg2.Error as exc:
            raise StoreError(f"{what} failed at {target.describe()}: {first_line(exc)}") from exc


def check_tables(target: Target, connect_timeout: float | None = 5) -> list[str]:
    """What differs from the seed's schema: missing tables, missing columns, wrong types."""
    rows = _columns(target, connect_timeout, "schema check")
    found: dict[str, dict[str, str]] = {}
    for table, column, pg_type in rows:
        found.setdefault(table, {})[column] = pg_type
    problems = []
    for table, columns in TABLES.items():
        if table not in found:
            problems.append(f"table {table} is missing")
            continue
        for column, pg_type in columns.items():
            actual = found[table].get(column)
            if actual is None:
                problems.append(f"column {table}.{column} is missing")
            elif actual != pg_type:
                problems.append(f"column {table}.{column} is {actual}, expected {pg_type}")
    return problems


def drop_tables(target: Target, connect_timeout: float | None = 5) -> None:
    with closing(target.connect(connect_timeout)) as conn:
        try:
            with conn, conn.cursor() as cur:
                cur.execute(QUERIES["migration_lock"], {"namespace": LOCK_NAMESPACE})
                cur.execute(QUERIES["drop_tables"])
        except psycopg2.Error as exc:
            raise StoreError(f"drop failed at {target.describe()}: {first_line(exc)}") from exc
