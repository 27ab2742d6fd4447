"""The SEARCH/REPLACE engine behind ``jr-checkpoint patch``.

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

Inside a block every line is literal. Texts are compared as whole lines, without their line
endings, so a CRLF file matches an LF patch and keeps its CRLF. A block that adds methods is
"already present" when the class already defines all of them, whatever their bodies (a host
that made the change by hand); the engine never defines a class attribute twice. Nothing here
prints: :mod:`jr_checkpoint.cli` reports the outcomes.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
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
#: A block's state in a file: its change is still to make, is already made, cannot be made, or
#: is not needed because the class already defines every method the block adds (by other text).
PENDING, DONE, CONFLICT, PRESENT = "pending", "done", "conflict", "present"

_HEADER = re.compile(r"([A-Za-z_-]+):\s*(.*?)\s*$")
_METHOD = re.compile(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
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
    outcome, at = _assess_text(target, block, reverse)
    if block.adds and outcome.state != (PENDING if reverse else DONE):
        present = _assess_methods(target, block, reverse)
        if present is not None:
            return present
    if outcome.state == PENDING:
        return _splice_checked(target, block, at, reverse)
    return outcome


def _assess_text(target: TargetFile, block: Block, reverse: bool) -> tuple[Outcome, int]:
    """The block's state from its texts alone, and where to splice when it is pending."""
    old, new = (block.replace, block.search) if reverse else (block.search, block.replace)
    old_name, new_name = ("REPLACE", "SEARCH") if reverse else ("SEARCH", "REPLACE")
    old_at, new_at = _find(target.lines, old), _find(target.lines, new)
    free_old = _outside(old_at, len(old), new_at, len(new))
    free_new = _outside(new_at, len(new), old_at, len(old))
    if len(free_old) == 1 and not free_new:
        return Outcome(block, PENDING), free_old[0]
    if not free_old and len(free_new) == 1:
        return Outcome(block, DONE), -1
    if not free_old and not free_new:
        return _not_found(target, block, reverse), -1
    if len(free_old) > 1:
        return Outcome(block, CONFLICT, f"{old_name} text found {len(free_old)} times in "
                       f"{block.path} (lines {_numbers(free_old)}); it must match exactly once"), -1
    if len(free_new) > 1:
        return Outcome(block, CONFLICT, f"{new_name} text found {len(free_new)} times in "
                       f"{block.path} (lines {_numbers(free_new)})"), -1
    return Outcome(block, CONFLICT, f"both SEARCH (line {free_old[0] + 1}) and REPLACE "
                   f"(line {free_new[0] + 1}) text are in {block.path}"), -1


def _assess_methods(target: TargetFile, block: Block, reverse: bool) -> Outcome | None:
    """PRESENT when the class defines the block's methods by other text; None: the texts decide.

    Applying: all of them defined is PRESENT, some of them a conflict (never define one twice).
    Reverting a block whose REPLACE text is not there: any of them defined is the host's own,
    PRESENT, and left alone.
    """
    try:
        defined = class_attributes(target.render())
    except SyntaxError as exc:
        return Outcome(block, CONFLICT, f"{block.path} is not valid Python ({exc.msg}, line "
                       f"{exc.lineno}): cannot tell whether it defines {_names(block.adds)}")
    missing = [cls for cls, _ in block.adds if cls not in defined]
    if missing:
        return Outcome(block, CONFLICT, f"class {missing[0]} not found in {block.path}")
    have = [(cls, method) for cls, method in block.adds if method in defined[cls]]
    if not have or (not reverse and len(have) < len(block.adds)):
        if have:
            lacking = [pair for pair in block.adds if pair not in have]
            return Outcome(block, CONFLICT, f"{_names(have)} already defined in {block.path} but "
                           f"not {_names(lacking)}: a method is never defined twice; add the "
                           "others by hand")
        return None
    return Outcome(block, PRESENT, _names(have, " defines "))


def _names(pairs: Iterable[tuple[str, str]], joiner: str = ".") -> str:
    """``JrQueueClient defines a, b`` (joiner " defines ") or ``JrQueueClient.a, JrQueueClient.b``."""
    by_class: dict[str, list[str]] = {}
    for cls, method in pairs:
        by_class.setdefault(cls, []).append(method)
    if joiner == ".":
        return ", ".join(f"{cls}.{method}" for cls, methods in by_class.items() for method in methods)
    return "; ".join(f"{cls}{joiner}{', '.join(methods)}" for cls, methods in by_class.items())


def class_attributes(source: bytes) -> dict[str, list[str]]:
    """Every class in ``source`` and the names its body defines (def, assignment), in order.

    A name listed twice is defined twice. Classes of the same name are merged.
    """
    classes: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            names = classes.setdefault(node.name, [])
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.append(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    names.extend(t.id for t in targets if isinstance(t, ast.Name))
    return classes


def _duplicates(source: bytes) -> set[str] | None:
    """``Class.name`` for each method defined twice in a class; None when it is not Python."""
    try:
        classes = class_attributes(source)
    except SyntaxError:
        return None
    return {f"{cls}.{name}" for cls, names in classes.items()
            for name in {n for n in names if names.count(n) > 1}}


def _splice_checked(target: TargetFile, block: Block, at: int, reverse: bool) -> Outcome:
    """Splice the block in memory; refuse a Python file it would break or give a method twice."""
    old, new = (block.replace, block.search) if reverse else (block.search, block.replace)
    python = block.path.endswith(".py")
    before = _duplicates(target.render()) if python else None
    lines, endings = list(target.lines), list(target.endings)
    target.splice(at, len(old), new)
    if before is None:
        return Outcome(block, PENDING)
    try:
        after = class_attributes(target.render())
    except SyntaxError as exc:
        reason = f"the result would not be valid Python ({exc.msg}, line {exc.lineno})"
    else:
        twice = sorted({f"{cls}.{name}" for cls, names in after.items()
                        for name in names if names.count(name) > 1} - before)
        if not twice:
            return Outcome(block, PENDING)
        reason = f"the result would define {', '.join(twice)} twice in {block.path}"
    target.lines, target.endings = lines, endings
    return Outcome(block, CONFLICT, reason)


def _numbers(starts: list[int]) -> str:
    return ", ".join(str(at + 1) for at in starts)


def _best_window(lines: list[str], needle: tuple[str, ...]) -> tuple[float, int, int]:
    """(similarity, start, size) of the window of ``lines`` that resembles ``needle`` most."""
    size = min(len(needle), len(lines))
    best_at, best_ratio = 0, -1.0
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(needle)
    for at in range(len(lines) - size + 1):
        matcher.set_seq1(lines[at:at + size])
        ratio = matcher.ratio() if matcher.real_quick_ratio() > best_ratio else -1.0
        if ratio > best_ratio:
            best_at, best_ratio = at, ratio
    return best_ratio, best_at, size


def closest_lines(lines: list[str], needle: tuple[str, ...], name: str, path: str,
                  limit: int = 40) -> tuple[str, ...]:
    """A unified diff from ``needle`` to the window of the file that resembles it most."""
    if not lines:
        return (f"{path} is empty",)
    _, best_at, size = _best_window(lines, needle)
    window = lines[best_at:best_at + size]
    diff = difflib.unified_diff(list(needle), window, fromfile=name, lineterm="",
                                tofile=f"{path} lines {best_at + 1}-{best_at + size}")
    shown = list(diff)
    return tuple(shown[:limit] + ([f"... {len(shown) - limit} more lines"] if len(shown) > limit else []))


def _not_found(target: TargetFile, block: Block, reverse: bool) -> Outcome:
    """Neither text is there: show the file's lines closest to the text they resemble more.

    A host that made the change by hand and then edited it resembles REPLACE, not SEARCH.
    """
    texts = [("SEARCH", block.search), ("REPLACE", block.replace)]
    if reverse:
        texts.reverse()
    expected, other = texts
    if target.lines and _best_window(target.lines, other[1])[0] > _best_window(target.lines, expected[1])[0]:
        reason = (f"{expected[0]} text not found in {block.path}, nor {other[0]} text; "
                  f"closest to {other[0]}:")
        shown = other
    else:
        reason, shown = f"{expected[0]} text not found in {block.path}", expected
    return Outcome(block, CONFLICT, reason, closest_lines(
        target.lines, shown[1], f"{shown[0]} of block {block.number}", block.path))


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
