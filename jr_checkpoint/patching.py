"""The SEARCH/REPLACE engine behind ``jr-checkpoint patch``: plan every block, then write.

The patch files are read by :mod:`jr_checkpoint.patchfile` (re-exported here). Texts are
compared as whole lines, without their line endings, so a CRLF file matches an LF patch and
keeps its CRLF. A block that adds methods is
"already present" when the class already defines all of them, whatever their bodies (a host
that made the change by hand); the engine never defines a class attribute twice. Nothing here
prints: :mod:`jr_checkpoint.cli` reports the outcomes.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import PatchConflict, PatchError, UnsafePatchPath
from .patchfile import DIVIDER, REPLACE, SEARCH, Block, Patch, bundled, load_patches, parse

__all__ = ["CONFLICT", "DIVIDER", "DONE", "PENDING", "PRESENT", "REPLACE", "SEARCH", "Block",
           "Outcome", "Patch", "Plan", "bundled", "class_attributes", "closest_lines",
           "load_patches", "parse", "plan", "resolve_target", "write"]

#: A block's state in a file: its change is still to make, is already made, cannot be made, or
#: is not needed because the class already defines every method the block adds (by other text).
PENDING, DONE, CONFLICT, PRESENT = "pending", "done", "conflict", "present"

_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


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
