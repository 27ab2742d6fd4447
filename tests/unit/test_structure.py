"""The package's shape, read from its source with ast: no import cycle (TYPE_CHECKING and
function-level imports counted, a package ``__init__`` and its submodules included), no
module over 400 lines, and psycopg2 imported by jr_checkpoint/db.py alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "jr_checkpoint"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> tuple[set[str], set[str]]:
    """The package's modules ``name`` imports, and every top-level package it imports."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inside, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from . import db` names a module; `from .db import connect` names its module.
            found = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in MODULES else stem
                     for alias in node.names]
        else:
            continue
        for target in found:
            outside.add(target.split(".")[0])
            if target in MODULES and target != name:
                inside.add(target)
    return inside, outside


GRAPH = {name: imports(name)[0] for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return path[path.index(child):] + [child]
            if child not in state:
                cycle = visit(child)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_reader_sees_type_checking_and_submodule_imports():
    assert "jr_checkpoint.task_run" in GRAPH["jr_checkpoint.hooks"]  # under TYPE_CHECKING
    assert "jr_checkpoint.decorator" in GRAPH["jr_checkpoint"]  # the package's __init__
    assert "jr_checkpoint.db" in GRAPH["jr_checkpoint.dsn"]  # `from . import db`


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_400_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines"


def test_psycopg2_is_imported_by_db_alone():
    importers = sorted(name for name in MODULES if "psycopg2" in imports(name)[1])
    assert importers == ["jr_checkpoint.db"]


def test_the_store_and_the_fake_implement_the_ledger_protocol():
    from jr_checkpoint import CheckpointStore
    from jr_checkpoint.ledger import Ledger
    from tests.fakes import FakeStore

    assert isinstance(CheckpointStore("host=db.invalid"), Ledger)
    assert isinstance(FakeStore(), Ledger)
    assert not isinstance(object(), Ledger)
