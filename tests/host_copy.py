"""Copies of the host stand-in to patch: as the host is today, or as the seed found it.

Today's host (``tests/host``) already has the seed's loop (patch 01's REPLACE text) and its
own save_checkpoint/get_last_checkpoint/cleanup_checkpoints. The seed was written against
the host before both: ``revert 01`` gives the loop, and removing the three methods gives the
client (as the host's parent commit has it).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from jr_checkpoint import patching

HOST = Path(__file__).parent / "host"
EXECUTOR = "jr_executor/task_executor.py"
CLIENT = "jr_executor/jr_queue_client.py"
CHECKPOINT_METHODS = ("save_checkpoint", "get_last_checkpoint", "cleanup_checkpoints")


def copy_host(destination: Path) -> Path:
    """A private copy of the stand-in, as the host is today."""
    shutil.copytree(HOST, destination, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def remove_methods(path: Path, cls: str, names: tuple[str, ...]) -> None:
    """Delete the named methods of ``cls`` from the file, each with the blank line after it."""
    lines = path.read_text().splitlines(keepends=True)
    (node,) = [n for n in ast.walk(ast.parse("".join(lines)))
               if isinstance(n, ast.ClassDef) and n.name == cls]
    spans = [(item.lineno - 1, item.end_lineno) for item in node.body
             if isinstance(item, ast.FunctionDef) and item.name in names]
    assert len(spans) == len(names), f"{cls} does not define all of {names}"
    for start, end in sorted(spans, reverse=True):
        if end < len(lines) and not lines[end].strip():
            end += 1
        del lines[start:end]
    path.write_text("".join(lines))


def seed_era(destination: Path) -> Path:
    """A copy of the stand-in as the seed found the host: no seed loop, no checkpoint methods."""
    root = copy_host(destination)
    patching.write(patching.plan(root, patching.load_patches(["01"]), reverse=True))
    remove_methods(root / CLIENT, "JrQueueClient", CHECKPOINT_METHODS)
    return root
