"""The seed instruction (Kanban #1751) as the tests read it: its edits and its verification snippet.

``tests/data/seed_instruction_1751.md`` is the instruction exactly as the project received it.
The patterns below are deliberately independent of jr_checkpoint.patching, so a test comparing
the two would notice a parser that drops or changes a byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SEED = Path(__file__).parent / "data" / "seed_instruction_1751.md"

_EDIT = re.compile(r"^File: `(?P<path>[^`]+)`\n\n```python\n"
                   r"(?P<raw><<<<<<< SEARCH\n(?P<search>.*?\n)=======\n(?P<replace>.*?\n)"
                   r">>>>>>> REPLACE\n)```", re.S | re.M)
_SNIPPET = re.compile(r"After all steps, verify the wiring resolves:\n\n```text\n"
                      r"python3 -c \"\n(?P<code>.*?)\"\n```", re.S)


@dataclass(frozen=True)
class SeedEdit:
    path: str
    search: str  # full lines, each ending in "\n"
    replace: str
    raw: str  # from "<<<<<<< SEARCH" through ">>>>>>> REPLACE\n", exactly as in the seed


def seed_edits() -> list[SeedEdit]:
    """The seed's SEARCH/REPLACE edits in order: Step 2, then Step 3."""
    text = SEED.read_text(encoding="utf-8")
    return [SeedEdit(m["path"], m["search"], m["replace"], m["raw"]) for m in _EDIT.finditer(text)]


def verification_snippet() -> str:
    """The Python code of the seed's "After all steps" check (the body of its ``python3 -c``)."""
    match = _SNIPPET.search(SEED.read_text(encoding="utf-8"))
    assert match, "the seed's verification snippet was not found"
    return match["code"]


_DDL = re.compile(r'cur\.execute\("""\n(?P<sql>.*?)"""\)', re.S)


def seed_ddl() -> str:
    """The SQL of the seed's Step 1 migration: its two ``cur.execute(\"\"\"...\"\"\")`` bodies."""
    bodies = [m["sql"] for m in _DDL.finditer(SEED.read_text(encoding="utf-8"))]
    assert len(bodies) == 2, "the seed's Step 1 DDL was not found"
    return "\n".join(bodies)
