"""The SEARCH/REPLACE engine behind ``jr-checkpoint patch``.

A patch file is UTF-8 text. Outside a block a line is blank, a ``#`` comment, a header
(``path: jr_executor/task_executor.py`` names the target of the blocks below it, relative to
the host's root, with ``/``; ``optional: true`` keeps the patch out of the default set) or
the opening marker of a block::

    <<<<<<< SEARCH
    text that must occur exactly once in the target
    =======
    text that takes its place
    >>>>>>> REPLACE

Inside a block every line is literal. Texts are compared as whole lines, without their line
endings, so a CRLF file matches an LF patch and keeps its CRLF. Nothing here prints:
:mod:`jr_checkpoint.cli` reports the outcomes.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from .errors import PatchConflict, PatchError, PatchFormatError, UnsafePatchPath

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
#: A block's state in a file: its change is still to make, is already made, or cannot be made.
PENDING, DONE, CONFLICT = "pending", "done", "conflict"

_HEADER = re.compile(r"([A-Za-z_]+):\s*(.*?)\s*$")
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


@dataclass(frozen=True)
class Block:
    """One SEARCH/REPLACE pair; texts are tuples of lines without their endings."""

    patch: str
    number: int
    line: int
    path: str
    search: tuple[str, ...]
    replace: tuple[str, ...]

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
    while index < len(lines):
        line, number = lines[index].rstrip(), index + 1
        if line == SEARCH:
            if path is None:
                raise _format_error(name, number, "block without a path: put 'path: FILE' above it")
            block, index = _read_block(lines, index, name, path, len(blocks) + 1)
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
            else:
                raise _format_error(name, number, f"bad header {line[:60]!r} "
                                    "(known: 'path: FILE', 'optional: true|false')")
        index += 1
    if not blocks:
        raise _format_error(name, max(len(lines), 1), f"no {SEARCH!r} block in the file")
    return Patch(name, tuple(blocks), optional)


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


# -- files and their lines -------------------------------------------------------------------


@dataclass
class TargetFile:
    """A target read once: its original bytes and mode, and its lines as the plan edits them."""

    path: Path
    original: bytes
    mode: int
    lines: list[str] = field(default_factory=list)
    endings: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> TargetFile:
        data = path.read_bytes()
        target = cls(path, data, stat.S_IMODE(path.stat().st_mode))
        for piece in _LINE.findall(data.decode("utf-8", "surrogateescape")):
            ending = "\r\n" if piece.endswith("\r\n") else "\n" if piece.endswith("\n") else ""
            target.lines.append(piece[: len(piece) - len(ending)])
            target.endings.append(ending)
        return target

    def render(self) -> bytes:
        text = "".join(line + end for line, end in zip(self.lines, self.endings, strict=True))
        return text.encode("utf-8", "surrogateescape")

    def splice(self, at: int, count: int, new: tuple[str, ...]) -> None:
        """Put ``new`` over ``count`` lines at ``at``, in the line endings of the lines replaced."""
        old = self.endings[at:at + count]
        eol = old[0] or ("\r\n" if "\r\n" in self.endings else "\n")
        self.lines[at:at + count] = new
        self.endings[at:at + count] = [eol] * (len(new) - 1) + [old[-1]]


def _find(lines: list[str], needle: tuple[str, ...]) -> list[int]:
    size = len(needle)
    return [at for at in range(len(lines) - size + 1)
            if lines[at] == needle[0] and tuple(lines[at:at + size]) == needle]


def _outside(starts: list[int], size: int, others: list[int], other_size: int) -> list[int]:
    """The matches not inside a match of the other text (REPLACE may contain SEARCH)."""
    return [at for at in starts
            if not any(other <= at and at + size <= other + other_size for other in others)]


# -- planning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    block: Block
    state: str
    reason: str = ""
    context: tuple[str, ...] = ()


@dataclass
class Plan:
    """Every block's outcome (in patch order) and every target's new text; nothing written yet."""

    root: Path
    reverse: bool
    outcomes: list[Outcome]
    files: dict[Path, TargetFile]

    @property
    def conflicts(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.state == CONFLICT]

    def changed(self) -> list[TargetFile]:
        return [target for target in self.files.values() if target.render() != target.original]


def plan(root: str | os.PathLike[str], patches: Iterable[Patch], *, reverse: bool = False) -> Plan:
    """Assess every block in memory (in reverse order to revert); refuse unsafe targets first."""
    root_dir = _root(root)
    blocks = [block for patch in patches for block in patch.blocks]
    paths = [resolve_target(root_dir, block) for block in blocks]
    files: dict[Path, TargetFile] = {}
    outcomes: list[Outcome | None] = [None] * len(blocks)
    order = range(len(blocks) - 1, -1, -1) if reverse else range(len(blocks))
    for index in order:
        if paths[index] not in files:
            files[paths[index]] = _read_target(paths[index], blocks[index])
        outcomes[index] = _assess(files[paths[index]], blocks[index], reverse)
    return Plan(root_dir, reverse, [outcome for outcome in outcomes if outcome], files)


def _root(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise PatchError(f"root {root} is not a directory")
    return path.resolve()


def _read_target(path: Path, block: Block) -> TargetFile:
    try:
        return TargetFile.read(path)
    except OSError as exc:
        raise PatchError(f"{block.label()}: cannot read {path}: {exc.strerror or exc}") from exc


def resolve_target(root: Path, block: Block) -> Path:
    """The block's target, resolved; refused when it is absolute, uses '..' or leaves ``root``."""
    raw = block.path
    if PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).anchor:
        raise UnsafePatchPath(f"{block.label()}: refused: absolute target path {raw!r}")
    if ".." in PurePosixPath(raw).parts or ".." in PureWindowsPath(raw).parts:
        raise UnsafePatchPath(f"{block.label()}: refused: target path {raw!r} uses '..'")
    try:
        target = (root / raw).resolve()
    except (OSError, RuntimeError) as exc:
        raise UnsafePatchPath(f"{block.label()}: refused: cannot resolve {raw!r}: {exc}") from exc
    if not target.is_relative_to(root):
        raise UnsafePatchPath(f"{block.label()}: refused: {raw!r} resolves to {target}, "
                              f"outside the root {root}")
    if not target.is_file():
        raise PatchError(f"{block.label()}: target file {raw} not found under {root}")
    return target


def _assess(target: TargetFile, block: Block, reverse: bool) -> Outcome:
    """Say whether ``block`` is still to apply (then apply it in memory), done, or in conflict."""
    old, new = (block.replace, block.search) if reverse else (block.search, block.replace)
    old_name, new_name = ("REPLACE", "SEARCH") if reverse else ("SEARCH", "REPLACE")
    old_at, new_at = _find(target.lines, old), _find(target.lines, new)
    free_old = _outside(old_at, len(old), new_at, len(new))
    free_new = _outside(new_at, len(new), old_at, len(old))
    if len(free_old) == 1 and not free_new:
        target.splice(free_old[0], len(old), new)
        return Outcome(block, PENDING)
    if not free_old and len(free_new) == 1:
        return Outcome(block, DONE)
    if not free_old and not free_new:
        return Outcome(block, CONFLICT, f"{old_name} text not found in {block.path}",
                       closest_lines(target.lines, old, f"{old_name} of block {block.number}",
                                     block.path))
    if len(free_old) > 1:
        return Outcome(block, CONFLICT, f"{old_name} text found {len(free_old)} times in "
                       f"{block.path} (lines {_numbers(free_old)}); it must match exactly once")
    if len(free_new) > 1:
        return Outcome(block, CONFLICT, f"{new_name} text found {len(free_new)} times in "
                       f"{block.path} (lines {_numbers(free_new)})")
    return Outcome(block, CONFLICT, f"both SEARCH (line {free_old[0] + 1}) and REPLACE "
                   f"(line {free_new[0] + 1}) text are in {block.path}")


def _numbers(starts: list[int]) -> str:
    return ", ".join(str(at + 1) for at in starts)


def closest_lines(lines: list[str], needle: tuple[str, ...], name: str, path: str,
                  limit: int = 40) -> tuple[str, ...]:
    """A unified diff from ``needle`` to the window of the file that resembles it most."""
    if not lines:
        return (f"{path} is empty",)
    size = min(len(needle), len(lines))
    best_at, best_ratio = 0, -1.0
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(needle)
    for at in range(len(lines) - size + 1):
        matcher.set_seq1(lines[at:at + size])
        ratio = matcher.ratio() if matcher.real_quick_ratio() > best_ratio else -1.0
        if ratio > best_ratio:
            best_at, best_ratio = at, ratio
    window = lines[best_at:best_at + size]
    diff = difflib.unified_diff(list(needle), window, fromfile=name, lineterm="",
                                tofile=f"{path} lines {best_at + 1}-{best_at + size}")
    shown = list(diff)
    return tuple(shown[:limit] + ([f"... {len(shown) - limit} more lines"] if len(shown) > limit else []))


# -- writing ---------------------------------------------------------------------------------


def write(plan: Plan) -> list[Path]:
    """Write every changed file, or none: refuse on any conflict or on a file changed since read."""
    if plan.conflicts:
        raise PatchConflict(f"refused: {len(plan.conflicts)} of {len(plan.outcomes)} blocks "
                            "conflict; no file was changed")
    changed = plan.changed()
    for target in changed:
        if target.path.read_bytes() != target.original:
            raise PatchConflict(f"refused: {target.path} changed while it was being patched; "
                                "no file was changed")
    staged: list[tuple[str, TargetFile]] = []
    try:
        for target in changed:
            staged.append((_stage(target.path, target.render(), target.mode), target))
    except OSError as exc:
        _discard(name for name, _ in staged)
        raise PatchError(f"cannot write next to {target.path}: {exc}; no file was changed") from exc
    _commit(staged)
    return [target.path for target in changed]


def _stage(path: Path, data: bytes, mode: int) -> str:
    """Write ``data`` to a temporary file beside ``path`` (same filesystem, so os.replace is atomic)."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".jr-checkpoint", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(name, mode)
    except BaseException:
        _discard([name])
        raise
    return name


def _commit(staged: list[tuple[str, TargetFile]]) -> None:
    """Move the staged files into place; if one move fails, put the earlier ones back."""
    done: list[TargetFile] = []
    try:
        for name, target in staged:
            os.replace(name, target.path)
            done.append(target)
    except OSError as exc:
        _discard(name for name, _ in staged[len(done):])
        for target in done:
            os.replace(_stage(target.path, target.original, target.mode), target.path)
        raise PatchError(f"cannot replace {staged[len(done)][1].path}: {exc}; "
                         "files already replaced were restored") from exc


def _discard(names: Iterable[str]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
