"""What a step is: its position in ``steps``, its identity, its outcome.

A step is identified by **what it does**, not by where it stands: the host re-extracts
steps from an instruction on every attempt, and the same instruction can give a different
list (a created file's block becomes a ``partial_edit``; a self-critique reorders, drops or
duplicates steps; an in-process retry runs a shorter list). :func:`identity` keeps what
decides a step's effect and drops what the extraction varies:

- ``file`` write / partial edit: the path and the content, whitespace runs collapsed
  (``write`` and ``partial_edit`` of the same content are the same step; ``edit_info`` and
  indentation are not part of it);
- ``search_replace``: the path, the SEARCH text and the REPLACE text, exactly;
- ``bash`` / ``sql``: the command, stripped;
- anything else: the whole step as canonical JSON.

The ledger keeps one row per step *slot* (the seed's ``step_number``); :class:`SlotPlan`
maps the positions of this call's list onto slots so that a step that succeeded is
recognised wherever it now stands and no succeeded step's row is ever taken by another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

SUCCESS, FAILED, ERROR = "success", "failed", "error"

#: Bumped whenever identity() changes meaning, so old digests never match new ones by chance.
IDENTITY_VERSION = "jr-checkpoint/2"

#: PostgreSQL's INTEGER range.
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1


def fits_int4(value: Any) -> bool:
    """A plain Python int (not a bool, a float, a string, a subclass) in PostgreSQL's INTEGER range."""
    return type(value) is int and INT4_MIN <= value <= INT4_MAX


def is_task_id(value: Any) -> bool:
    """The seed's column is INTEGER: a real int (not a bool) in PostgreSQL's range."""
    return isinstance(value, int) and not isinstance(value, bool) and fits_int4(int(value))


def parse_task_id(text: str) -> int | None:
    """A task id typed by a person (the command line, a URL), or None when it is not one."""
    try:
        value = int(text)
    except ValueError:
        return None
    return value if is_task_id(value) else None


# -- canonical JSON ---------------------------------------------------------------------------

def _canonical(value: Any) -> Any:
    """A JSON-ready copy: keys as strings, tuples as lists, anything else rendered with ``str``.

    Only needed when a mapping's keys are of types that cannot be sorted together.
    """
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return _json_default(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _json_default(value: Any) -> Any:
    """What JSON cannot hold: a set as a sorted list (str() of a set follows hash
    randomization, and a retry in a new process must match), anything else as ``str``."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=canonical_json)
    return str(value)


# One encoder, made once: json.dumps() with options builds a new one at every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_json_default)


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, values JSON cannot hold rendered with ``str``."""
    try:
        return _ENCODER.encode(value)
    except TypeError:  # keys of mixed types cannot be sorted: make them all strings first
        return _ENCODER.encode(_canonical(value))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def legacy_hash(step: Any) -> str:
    """jr-checkpoint 0.1's digest (the whole step's canonical JSON): read, never written."""
    return _sha256(canonical_json(step))


def host_hash(task_id: int, step_number: int, step_type: Any, target_file: Any) -> str:
    """The digest the host's own ``_record_step_result`` writes for a step."""
    return _sha256(f"{task_id}:{step_number}:{step_type}:{target_file}")


# -- what a step is ---------------------------------------------------------------------------

def is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """isinstance(value, Mapping), without the ABC check for a plain dict (the common case)."""
    return type(value) is dict or isinstance(value, Mapping)


def _args(step: Mapping[str, Any]) -> Mapping[str, Any]:
    args = step.get("args")
    return args if is_mapping(args) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _squeeze(value: Any) -> str:
    return " ".join(_text(value).split())


def target_file(step: Any) -> Any:
    """Where the step writes: ``args.path`` (the host's steps), else ``path`` / ``filepath``."""
    if not is_mapping(step):
        return ""
    args = step.get("args")
    if args and is_mapping(args):
        path = args.get("path")
        if path:
            return path
    return step.get("path") or step.get("filepath") or ""


def step_type(step: Any) -> Any:
    return step.get("type", "unknown") if is_mapping(step) else "unknown"


def skipped_result(step: Any, position: int) -> dict[str, Any]:
    """What ``execute()`` returns for a step that already succeeded, instead of running it.

    A success with no ``error`` (the host matches error text to decide on a retry), marked
    ``skipped``, carrying what the host reads from a step's result after the run: ``type``
    (its summary counts the ``file`` steps) and ``path``, which its in-process retry uses to
    drop steps already done, and which ``claim_verifier`` looks for on disk before it calls a
    success without artifacts a HALLUCINATION. The file is there: it was written by the
    attempt that recorded the success.
    """
    result: dict[str, Any] = {"success": True, "skipped": True, "checkpoint_hit": True,
                              "step_number": position}
    kind = step_type(step)
    if isinstance(kind, str) and kind != "unknown":
        result["type"] = kind
    path = target_file(step)
    if path:
        result["path"] = path
    return result


def identity(step: Any) -> list[str]:
    """What decides a step's effect, as strings (see the module docstring); raises on a
    hostile step."""
    if not is_mapping(step):
        return ["json", canonical_json(step)]
    kind = step.get("type")
    args = _args(step)
    if kind == "file":
        operation = _text(args.get("operation", "write"))
        if operation in ("write", "partial_edit"):
            operation = "put"
        return ["file", operation, _text(target_file(step)), _squeeze(args.get("content", ""))]
    if kind == "search_replace":
        get = args.get if args else step.get
        return ["search_replace", _text(target_file(step)), _text(get("search")),
                _text(get("replace"))]
    if kind in ("bash", "sql") and "command" in step:
        return [kind, _text(step["command"]).strip()]
    return ["json", canonical_json(step)]


def digest(step: Any) -> str:
    """SHA-256 hex of the step's identity: what ``step_content_hash`` holds.

    Each part is length-prefixed, so no two identities share a text.
    """
    return _sha256(_VERSION_PART + "".join([f"{len(part)}:{part}" for part in identity(step)]))


_VERSION_PART = f"{len(IDENTITY_VERSION)}:{IDENTITY_VERSION}"


# -- numbering: positions in this call's list -------------------------------------------------

class StepSequence:
    """The ``steps`` argument, numbered the way the seed's ``enumerate`` numbers it.

    A list or tuple is left as it is; an iterator (a generator) is passed on as a generator
    that remembers what it produced, so nothing is consumed ahead of the host.
    """

    def __init__(self, steps: Any):
        self.cursor = 0
        self.argument = steps
        self.exhausted = True
        if isinstance(steps, Iterator):
            # Single pass: hand the host a generator that remembers what it produced.
            produced: list[Any] = []
            self.items: Sequence[Any] = produced
            self.total: int | None = None
            self.exhausted = False
            self.argument = self._remember(steps, produced)
        elif isinstance(steps, Sequence):
            self.items, self.total = steps, len(steps)
        else:
            # Another re-iterable container (a set, a view): numbered in its iteration order.
            self.items = list(steps)
            self.total = len(self.items)

    def _remember(self, steps: Iterator[Any], produced: list[Any]) -> Iterator[Any]:
        for item in steps:
            produced.append(item)
            yield item
        self.exhausted = True

    def locate(self, step: Any) -> int | None:
        """The position of ``step``: its next occurrence after the previous step's position.

        Identity first (the same step object may appear twice), then equality (a host that
        copies a step before running it). A step run again with no later occurrence is the
        previous one again (a host that retries a step in place).
        """
        items = self.items
        for i in range(self.cursor, len(items)):
            if items[i] is step:
                self.cursor = i + 1
                return i
        for i in range(self.cursor, len(items)):
            try:
                equal = bool(items[i] == step)
            except Exception:
                equal = False
            if equal:
                self.cursor = i + 1
                return i
        if self.cursor and items[self.cursor - 1] is step:
            return self.cursor - 1
        return None


# -- slots: rows of the ledger ----------------------------------------------------------------

@dataclass
class Row:
    """One ``jr_step_rewards`` row as the plan sees it."""

    result: str
    digest: str | None
    step_type: Any = None
    target_file: Any = None


class SlotPlan:
    """Which ledger row (``step_number``) each position of this call's list uses.

    A position takes, in order: a row with its identity (successes first; the k-th
    occurrence of a step takes the k-th such row); a row the host's own helpers wrote at the
    same position for the same type and target; a row jr-checkpoint 0.1 wrote at the same
    position for the same step; else a new row: at its own position when that row is free
    (absent, or a failure no step of this call claims), otherwise after the last row. A
    success row is never given to another step.
    """

    def __init__(self, task_id: int, rows: Mapping[int, Row]):
        self.task_id = task_id
        self.rows = dict(rows)
        self.claimed: dict[int, int] = {}  # slot -> position
        self.slot_of: dict[int, int] = {}  # position -> slot
        self.matched: set[int] = set()  # positions whose slot holds their own history
        self.next_slot = max(self.rows, default=-1) + 1
        self._candidates: dict[str, list[int]] = {}
        for slot in sorted(self.rows, key=lambda s: (self.rows[s].result != SUCCESS, s)):
            row = self.rows[slot]
            if row.digest:
                self._candidates.setdefault(row.digest, []).append(slot)

    def _claim(self, position: int, slot: int, matched: bool) -> int:
        self.claimed[slot] = position
        self.slot_of[position] = slot
        if matched:
            self.matched.add(position)
        self.next_slot = max(self.next_slot, slot + 1)
        return slot

    def match(self, position: int, step: Any, step_digest: str) -> bool:
        """Give ``position`` the row that holds its own history, if there is one."""
        for slot in self._candidates.get(step_digest, ()):
            if slot not in self.claimed:
                self._claim(position, slot, True)
                return True
        row = self.rows.get(position)
        if row is None or position in self.claimed or row.digest is None:
            return False
        if row.digest == host_hash(self.task_id, position, row.step_type, row.target_file):
            # The host's own loop wrote it: its identity is the position, type and target
            # as that loop computed them (step.get('path', step.get('filepath', ''))).
            host_target = step.get("path", step.get("filepath", "")) if is_mapping(step) else ""
            if row.step_type == step_type(step) and (row.target_file or "") == (host_target or ""):
                self._claim(position, position, True)
                return True
            return False
        if row.digest == legacy_hash(step):
            self._claim(position, position, True)
            return True
        return False

    def slot(self, position: int) -> int:
        """The row ``position`` records into (a new one when it has none yet)."""
        slot = self.slot_of.get(position)
        if slot is not None:
            return slot
        row = self.rows.get(position)
        if position not in self.claimed and (row is None or row.result != SUCCESS):
            return self._claim(position, position, False)
        return self._claim(position, self.next_slot, False)

    def succeeded(self, position: int) -> bool:
        """True when ``position``'s own history says it succeeded."""
        if position not in self.matched:
            return False
        row = self.rows.get(self.slot_of[position])
        return row is not None and row.result == SUCCESS

    def record(self, position: int, result: str, step_digest: str | None) -> int:
        """Note ``position``'s new outcome in its row; returns the row (``step_number``)."""
        slot = self.slot(position)
        self.rows[slot] = Row(result, step_digest)
        self.matched.add(position)
        return slot


__all__ = ["ERROR", "FAILED", "INT4_MAX", "INT4_MIN", "SUCCESS", "Row", "SlotPlan", "StepSequence",
           "canonical_json", "digest", "fits_int4", "host_hash", "identity", "is_task_id", "legacy_hash",
           "parse_task_id", "step_type", "skipped_result", "target_file"]
