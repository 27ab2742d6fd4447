"""The checkpoint tables as they are, not as the seed wrote them.

Both tables are created with ``CREATE TABLE IF NOT EXISTS``, so on a host whichever Jr
instruction ran first set their shape: the Jan-31 instruction's ``jr_step_rewards`` has
``step_type VARCHAR(30) NOT NULL`` and ``target_file VARCHAR(500)``, a Feb-03 draft's
``jr_task_checkpoints`` has one row per step. ``migrate`` never alters a table that exists,
so the ledger adapts to what it finds instead, read once (:func:`read_shape`, one query):

- a value too long for a narrower column is cut to fit and marked (:func:`fit`);
- a missing value gets a placeholder where the column is NOT NULL (``'unknown'`` for a step
  type, an empty string for a path or an error);
- what cannot be adapted (a missing column or key, a per-step checkpoints table) makes the
  table incompatible, and nothing is written into it.

:class:`Shape` holds the widths and flags the store applies, and one line per difference for
``migrate`` and ``migrate --check`` to print.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .sql import QUERIES, SCHEMA, TABLES

if TYPE_CHECKING:
    from .db import Cursor

#: What a cut value ends with, inside the column's width.
CUT_MARK = "...[cut]"

#: Written instead of NULL into a NOT NULL column the seed leaves nullable.
PLACEHOLDERS = {"step_type": "unknown", "target_file": "", "error_detail": ""}

#: The step row's text columns the store can fit to any width.
FITTED = tuple(PLACEHOLDERS)

#: The unique keys the ledger's ON CONFLICT clauses name (functions.sql, queries.sql).
CONFLICT_KEYS = {
    "jr_step_rewards": ("task_id", "step_number"),
    "jr_task_checkpoints": ("task_id",),
    "jr_task_attempts": ("task_id", "attempt"),
}

#: The two tables of the seed; jr_task_attempts is the package's own.
SEED_TABLES = ("jr_step_rewards", "jr_task_checkpoints")

_VARCHAR = re.compile(r"character varying(?:\((\d+)\))?|text")


def _seed_not_null(schema: str) -> dict[str, set[str]]:
    """Each table's NOT NULL columns in ``schema.sql`` (a PRIMARY KEY column is one)."""
    tables: dict[str, set[str]] = {}
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", schema,
                                  flags=re.DOTALL):
        tables[table] = {match.group(1) for line in body.splitlines()
                         if (match := re.match(r"\s*(\w+) ", line))
                         and ("NOT NULL" in line or "PRIMARY KEY" in line)}
    return tables


_SEED_NOT_NULL = _seed_not_null(SCHEMA)


@dataclass(frozen=True)
class Shape:
    """What the store needs to know about the live tables; the defaults are the seed's.

    ``*_chars``: the column's width in characters (None: unbounded). ``*_required``: NOT NULL
    where the seed allows NULL (the store writes a placeholder). ``problems``: what makes a
    table unusable, one line each; ``notes``: differences the ledger lives with, one line each.
    """

    step_type_chars: int | None = 50
    target_file_chars: int | None = None
    error_detail_chars: int | None = None
    step_type_required: bool = False
    target_file_required: bool = False
    error_detail_required: bool = False
    steps_compatible: bool = True
    checkpoints_compatible: bool = True
    found: bool = True  # both seed tables exist
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def writable(self) -> bool:
        """The ledger may write: both seed tables exist and neither is incompatible."""
        return self.found and self.steps_compatible and self.checkpoints_compatible

    def fit_step(self, step_type: Any, target_file: Any, error_detail: Any) -> tuple[Any, Any, Any]:
        """A step row's text values as the live columns take them: a placeholder for a missing
        value where the column is NOT NULL, each cut to its column's width (:func:`fit`)."""
        if step_type is None and self.step_type_required:
            step_type = PLACEHOLDERS["step_type"]
        if target_file is None and self.target_file_required:
            target_file = PLACEHOLDERS["target_file"]
        if error_detail is None and self.error_detail_required:
            error_detail = PLACEHOLDERS["error_detail"]
        return (fit(step_type, self.step_type_chars), fit(target_file, self.target_file_chars),
                fit(error_detail, self.error_detail_chars))

    def incompatibility(self) -> str:
        """One line saying why nothing is written (for a worker's warning); '' when writable."""
        if self.writable:
            return ""
        if not self.found:
            return "the checkpoint tables are missing: run `jr-checkpoint migrate`"
        tables = [name for name, ok in (("jr_step_rewards", self.steps_compatible),
                                         ("jr_task_checkpoints", self.checkpoints_compatible))
                  if not ok]
        return (f"{' and '.join(tables)} not of the seed's shape ({self.problems[0]}); "
                "nothing is written to the checkpoint tables: see `jr-checkpoint migrate --check`")


SEED = Shape()


def fit(value: Any, chars: int | None) -> Any:
    """``value`` as text of at most ``chars`` characters: cut and ending with :data:`CUT_MARK`
    when it was longer. None, and anything when ``chars`` is None, pass as they are (the store
    bounds those). NUL bytes are escaped first, as the store would, so the result still fits."""
    if chars is None or value is None:
        return value
    if type(value) is str and len(value) <= chars and "\x00" not in value:
        return value  # the common case
    try:
        text = value if type(value) is str else str(value)
    except Exception:
        text = "<unprintable>"
    text = text.replace("\x00", "\\x00")
    if len(text) <= chars:
        return text
    if chars <= len(CUT_MARK):
        return text[:chars]
    return text[:chars - len(CUT_MARK)] + CUT_MARK


def read_shape(cursor: Cursor) -> Shape:
    """The live tables' shape, in one query (``live_shape``) on ``cursor``."""
    cursor.execute(QUERIES["live_shape"])
    return from_rows(cursor.fetchall())


def from_rows(rows: Iterable[Sequence[Any]]) -> Shape:
    """The :class:`Shape` of ``live_shape``'s rows: (table, columns, unique keys)."""
    live = {table: ({column[0]: column[1:] for column in columns or ()},
                    [tuple(key) for key in keys or ()])
            for table, columns, keys in rows}
    problems: list[str] = []
    notes: list[str] = []
    bad_tables = set()
    fields: dict[str, Any] = {}
    for table in TABLES:
        if table not in live:
            problems.append(f"table {table} is missing")
            bad_tables.add(table)
            continue
        columns, keys = live[table]
        before = len(problems)
        if table == "jr_task_checkpoints" and _per_step(columns, keys):
            problems.append(_per_step_line(columns))
        else:
            _compare(table, columns, keys, problems, notes, fields)
        if len(problems) > before:
            bad_tables.add(table)
    return Shape(**fields,
                 steps_compatible="jr_step_rewards" not in bad_tables,
                 checkpoints_compatible="jr_task_checkpoints" not in bad_tables,
                 found=all(table in live for table in SEED_TABLES),
                 problems=tuple(problems), notes=tuple(notes))


def _per_step(columns: dict[str, Any], keys: list[tuple[str, ...]]) -> bool:
    """A Feb-03 draft's table: a row per step (UNIQUE (task_id, step_number)), none per task."""
    per_task = any(set(key) == {"task_id"} for key in keys)
    return not per_task and ("step_number" in columns
                             or any(set(key) == {"task_id", "step_number"} for key in keys))


def _per_step_line(columns: dict[str, Any]) -> str:
    missing = [name for name in TABLES["jr_task_checkpoints"] if name not in columns]
    lacking = f"; no {', '.join(missing)}" if missing else ""
    return ("table jr_task_checkpoints is per step (UNIQUE (task_id, step_number)"
            f"{lacking}), not the seed's one row per task: incompatible, nothing is written "
            "into it and workers run unchecked")


def _compare(table: str, columns: dict[str, Any], keys: list[tuple[str, ...]], problems: list[str],
             notes: list[str], fields: dict[str, Any]) -> None:
    """One line per difference between a live table and the seed's: ``problems`` for what the
    ledger cannot write around, ``notes`` for what it adapts to or may ignore."""
    seed_not_null = _SEED_NOT_NULL.get(table, set())
    fitted = table == "jr_step_rewards"
    for column, seed_type in TABLES[table].items():
        name = f"column {table}.{column}"
        if column not in columns:
            problems.append(f"{name} is missing")
            continue
        live_type, chars, not_null, has_default = columns[column]
        adapted = fitted and column in FITTED
        if live_type != seed_type:
            _compare_type(name, live_type, seed_type, chars, adapted, problems, notes)
        if adapted and _VARCHAR.fullmatch(live_type):
            fields[f"{column}_chars"] = chars
        if not_null and column not in seed_not_null and not has_default:
            if adapted:
                fields[f"{column}_required"] = True
                notes.append(f"{name} is NOT NULL, the seed's is not: a step without one is "
                             f"recorded with {PLACEHOLDERS[column]!r}")
            else:
                problems.append(f"{name} is NOT NULL, the seed's is not: a write without one fails")
        elif not not_null and column in seed_not_null:
            notes.append(f"{name} allows NULL, the seed's is NOT NULL: harmless")
    extra = [column for column in columns if column not in TABLES[table]]
    required = [column for column in extra if columns[column][2] and not columns[column][3]]
    if required:
        problems.append(f"table {table} has NOT NULL columns the ledger does not write "
                        f"({', '.join(required)}): every write fails")
    optional = [column for column in extra if column not in required]
    if optional:
        notes.append(f"table {table} has columns the seed has not ({', '.join(optional)}): "
                     "harmless, the ledger leaves them empty")
    key = CONFLICT_KEYS[table]
    if not any(set(found) == set(key) for found in keys):
        problems.append(f"table {table} has no unique constraint on ({', '.join(key)}), which "
                        "the ledger's ON CONFLICT needs: every write fails")


def _compare_type(name: str, live_type: str, seed_type: str, chars: int | None, adapted: bool,
                  problems: list[str], notes: list[str]) -> None:
    seed = _VARCHAR.fullmatch(seed_type)
    if not (seed and _VARCHAR.fullmatch(live_type)):
        problems.append(f"{name} is {live_type}, expected {seed_type}")
        return
    seed_chars = int(seed.group(1)) if seed.group(1) else None
    if chars is None or (seed_chars is not None and chars >= seed_chars):
        notes.append(f"{name} is {live_type}, the seed's {seed_type}: wider, harmless")
    elif adapted:
        notes.append(f"{name} is {live_type}, the seed's {seed_type}: a longer value is cut "
                     f"to {chars} characters, ending {CUT_MARK!r}")
    else:
        problems.append(f"{name} is {live_type}, the seed's {seed_type}: a longer value "
                        "cannot be written")


__all__ = ["CUT_MARK", "PLACEHOLDERS", "SEED", "Shape", "fit", "from_rows", "read_shape"]
