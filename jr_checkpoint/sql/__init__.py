"""The SQL the package sends: ``schema.sql``, the named queries of ``queries.sql``, ``reports.sql``
and ``admin.sql``.

All are read once, at import, with :mod:`importlib.resources`, so they travel inside a wheel.
"""

from __future__ import annotations

import re
from importlib.resources import files

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

# Table name -> column name -> the type as PostgreSQL's format_type() spells it.
_TYPE_NAMES = {
    "SERIAL": "integer",
    "INTEGER": "integer",
    "TEXT": "text",
    "TIMESTAMP": "timestamp without time zone",
    "JSONB": "jsonb",
    "DOUBLE PRECISION": "double precision",
}


def read(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def parse_queries(text: str) -> dict[str, str]:
    """Split ``-- name: x`` sections into a dict of statements (comments kept, they are harmless)."""
    parts = _HEADER.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


def _pg_type(sql_type: str) -> str:
    if sql_type.endswith("[]"):
        return _pg_type(sql_type[:-2]) + "[]"
    match = re.fullmatch(r"VARCHAR\((\d+)\)", sql_type)
    if match:
        return f"character varying({match.group(1)})"
    return _TYPE_NAMES[sql_type]


def expected_columns(schema: str) -> dict[str, dict[str, str]]:
    """Read each table's columns and types out of ``schema.sql``; used by ``migrate --check``."""
    tables: dict[str, dict[str, str]] = {}
    for table, body in re.findall(
        r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", schema, flags=re.DOTALL
    ):
        columns = {}
        for line in body.strip().splitlines():
            match = re.match(r"\s*(\w+) (DOUBLE PRECISION|[A-Z]+(?:\(\d+\))?(?:\[\])?)", line)
            if match and match.group(1) not in ("UNIQUE", "PRIMARY"):
                columns[match.group(1)] = _pg_type(match.group(2))
        tables[table] = columns
    return tables


_FUNCTION = re.compile(r"CREATE OR REPLACE FUNCTION (\w+)\((.*?)\)\s*RETURNS", re.DOTALL)


def function_signatures(text: str) -> dict[str, str]:
    """Each function ``functions.sql`` creates -> ``name(argument types)``, as PostgreSQL's
    ``regprocedure`` reads it (the argument names and defaults left out)."""
    signatures = {}
    for name, arguments in _FUNCTION.findall(text):
        types = [" ".join(argument.split()[1:]).split(" DEFAULT ")[0]
                 for argument in arguments.split(",") if argument.strip()]
        signatures[name] = f"{name}({', '.join(types)})"
    return signatures


SCHEMA = read("schema.sql")
FUNCTIONS = read("functions.sql")  # created by the migration after the seed's tables
QUERIES = parse_queries(read("queries.sql"))
REPORTS = parse_queries(read("reports.sql"))  # the command line's reports, prune, demo
ADMIN = parse_queries(read("admin.sql"))  # what `migrate --check` asks about the role
TABLES = expected_columns(SCHEMA)
