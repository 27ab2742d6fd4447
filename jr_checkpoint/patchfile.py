"""The patch file format of ``jr-checkpoint patch``: reading and finding patch files.

A patch file is UTF-8 text. Outside a block a line is blank, a ``#`` comment, a header
(``path: jr_executor/task_executor.py`` names the target of the blocks below it, relative to
the host's root, with ``/``; ``optional: true`` keeps the patch out of the default set;
``adds-methods: Class.name, ...`` says which methods the next block adds to a class) or the
opening marker of a block::

    <<<<<<< SEARCH
    text that must occur exactly once in the target
    =======
    text that takes its place
    >>>>>>> REPLACE

Inside a block every line is literal. :mod:`jr_checkpoint.patching` applies the blocks.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PatchError, PatchFormatError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"

_HEADER = re.compile(r"([A-Za-z_-]+):\s*(.*?)\s*$")
_METHOD = re.compile(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Block:
    """One SEARCH/REPLACE pair; texts are tuples of lines without their endings."""

    patch: str
    number: int
    line: int
    path: str
    search: tuple[str, ...]
    replace: tuple[str, ...]
    #: (class, method) pairs the block adds, from its ``adds-methods:`` header.
    adds: tuple[tuple[str, str], ...] = ()

    @property
    def search_text(self) -> str:
        return "".join(line + "\n" for line in self.search)

    @property
    def replace_text(self) -> str:
        return "".join(line + "\n" for line in self.replace)

    def label(self) -> str:
        return f"{self.patch} block {self.number} ({self.path})"


@dataclass(frozen=True)
class Patch:
    name: str
    blocks: tuple[Block, ...]
    optional: bool = False


# -- reading patch files ---------------------------------------------------------------------


def _format_error(name: str, line: int, message: str) -> PatchFormatError:
    return PatchFormatError(f"{name}:{line}: {message}")


def parse(text: str, name: str = "<patch>") -> Patch:
    """Parse a patch file's text; a malformed file raises PatchFormatError with its line."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    blocks: list[Block] = []
    path, optional, index = None, False, 0
    adds: tuple[tuple[str, str], ...] | None = None
    adds_line = 0
    while index < len(lines):
        line, number = lines[index].rstrip(), index + 1
        if line == SEARCH:
            if path is None:
                raise _format_error(name, number, "block without a path: put 'path: FILE' above it")
            block, index = _read_block(lines, index, name, path, len(blocks) + 1)
            if adds is not None:
                block = _with_adds(block, adds, adds_line)
                adds = None
            blocks.append(block)
            continue
        if line in (DIVIDER, REPLACE):
            raise _format_error(name, number, f"{line!r} outside a block (missing {SEARCH!r}?)")
        if line and not line.startswith("#"):
            header = _HEADER.match(line)
            if not header:
                raise _format_error(name, number, f"unexpected line {line[:60]!r}: expected "
                                    f"'path: FILE', a '#' comment or {SEARCH!r}")
            key, value = header.groups()
            if key == "path" and value:
                path = value
            elif key == "optional" and value in ("true", "false"):
                optional = value == "true"
            elif key == "adds-methods" and adds is None:
                adds, adds_line = _parse_methods(value, name, number), number
            else:
                raise _format_error(name, number, f"bad header {line[:60]!r} (known: 'path: FILE', "
                                    "'optional: true|false', 'adds-methods: Class.method, ...' "
                                    "once per block)")
        index += 1
    if adds is not None:
        raise _format_error(name, adds_line, f"'adds-methods:' without a {SEARCH!r} block after it")
    if not blocks:
        raise _format_error(name, max(len(lines), 1), f"no {SEARCH!r} block in the file")
    return Patch(name, tuple(blocks), optional)


def _parse_methods(value: str, name: str, number: int) -> tuple[tuple[str, str], ...]:
    items = [item.strip() for item in value.split(",")]
    pairs = [_METHOD.fullmatch(item) for item in items]
    if not value or not all(pairs):
        raise _format_error(name, number, f"bad header 'adds-methods: {value[:60]}': expected "
                            "'Class.method' names separated by commas")
    return tuple((pair[1], pair[2]) for pair in pairs if pair)


def _defines(lines: tuple[str, ...], method: str) -> bool:
    return any(re.match(rf"\s*(async\s+)?def\s+{re.escape(method)}\s*\(", line) for line in lines)


def _with_adds(block: Block, adds: tuple[tuple[str, str], ...], line: int) -> Block:
    """The block with the methods it adds, each defined by its REPLACE text and not its SEARCH."""
    for cls, method in adds:
        if not _defines(block.replace, method) or _defines(block.search, method):
            raise _format_error(block.patch, line, f"adds-methods names {cls}.{method}, but the "
                                f"block at line {block.line} does not add 'def {method}('")
    return dataclasses.replace(block, adds=adds)


def _read_block(lines: list[str], start: int, name: str, path: str, number: int) -> tuple[Block, int]:
    """Read the block opened at ``lines[start]``; return it and the index after its end."""
    sections: tuple[list[str], list[str]] = ([], [])
    part, opened = 0, start + 1
    for index in range(start + 1, len(lines)):
        marker = lines[index].rstrip()
        if marker == SEARCH:
            raise _format_error(name, index + 1, f"{SEARCH!r} inside the block opened at line {opened}")
        if marker == DIVIDER:
            if part == 1:
                raise _format_error(name, index + 1, f"second {DIVIDER!r} in the block opened "
                                    f"at line {opened}")
            part = 1
        elif marker == REPLACE:
            if part == 0:
                raise _format_error(name, index + 1, f"{REPLACE!r} before {DIVIDER!r} in the "
                                    f"block opened at line {opened}")
            search, replace = (tuple(section) for section in sections)
            if not search or not replace or search == replace:
                raise _format_error(name, opened, "SEARCH and REPLACE must be non-empty and differ")
            return Block(name, number, opened, path, search, replace), index + 1
        else:
            sections[part].append(lines[index])
    missing = DIVIDER if part == 0 else REPLACE
    raise _format_error(name, opened, f"the block opened here has no {missing!r} before the end")


def _parse_bytes(data: bytes, name: str) -> Patch:
    try:
        return parse(data.decode("utf-8"), name)
    except UnicodeDecodeError as exc:
        raise PatchFormatError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def bundled() -> list[Traversable]:
    """The patch files shipped inside the package (``jr_checkpoint/patches/*.patch``)."""
    folder = resources.files(__package__) / "patches"
    return sorted((entry for entry in folder.iterdir() if entry.name.endswith(".patch")),
                  key=lambda entry: entry.name)


def load_patches(names: Sequence[str] = ()) -> list[Patch]:
    """Patches by file path or bundled name ("03", "03_task_executor_decorator[.patch]").

    With no names: every bundled patch not marked ``optional: true``.
    """
    if not names:
        patches = [_parse_bytes(entry.read_bytes(), entry.name) for entry in bundled()]
        return [patch for patch in patches if not patch.optional]
    return [_load_named(name) for name in names]


def _load_named(name: str) -> Patch:
    if Path(name).is_file():
        return _parse_bytes(Path(name).read_bytes(), name)
    for entry in bundled():
        stem = entry.name.removesuffix(".patch")
        if name in (entry.name, stem, stem.split("_")[0]):
            return _parse_bytes(entry.read_bytes(), entry.name)
    known = ", ".join(entry.name for entry in bundled())
    raise PatchError(f"no such patch: {name} (not a file, nor a bundled patch: {known})")
