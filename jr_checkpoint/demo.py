"""``jr-checkpoint demo``: a task really crashes, and its retry resumes from the checkpoint.

A sample task of six steps edits files in a temporary workspace. Attempt 1 runs in a child
process (``python -m jr_checkpoint.demo --child``) that is killed with SIGKILL in the middle
of step 3; attempt 2 runs the same task in this process. Both run through a ``TaskExecutor``
checkpointed by :func:`jr_checkpoint.install`, exactly as the host's would be.

This module prints nothing: progress goes through the ``out`` callable, the outcome comes
back as a :class:`DemoReport` for ``cli.py`` to lay out.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import db, reports, schema
from .dsn import DEFAULT_CONNECT_TIMEOUT, ENV_DSN, Target
from .errors import CheckpointError
from .install import install, installed, uninstall
from .store import CheckpointStore

TARGET = "jr_checkpoint.demo:TaskExecutor.execute_steps"
CONFIG = "app/config.py"
INITIAL_CONFIG = 'VERSION = "1.0"\nDEBUG = True\nWORKERS = 2\n'
CRASH_STEP = 3
MARKER = ".in-step-3"
STALL_SECONDS = 60.0  # the child waits this long in step 3; it is killed long before
PR_SET_PDEATHSIG = 1  # linux/prctl.h
LOCK_WAIT = 10.0  # the killed child's session may take a moment to release the task's lock


def sample_steps() -> list[dict[str, Any]]:
    """Six steps; the SEARCH/REPLACE steps can apply only once, the append must apply once."""
    return [
        {"type": "search_replace", "path": CONFIG, "search": "DEBUG = True", "replace": "DEBUG = False"},
        {"type": "append", "path": CONFIG, "content": "RETRIES = 3\n"},
        {"type": "write", "path": "app/CHANGES.md", "content": "- debug off\n- 3 retries\n- 8 workers\n"},
        {"type": "search_replace", "path": CONFIG, "search": "WORKERS = 2", "replace": "WORKERS = 8"},
        {"type": "search_replace", "path": CONFIG, "search": 'VERSION = "1.0"',
         "replace": 'VERSION = "1.1"'},
        {"type": "compile", "path": CONFIG},
    ]


FINAL_CONFIG = 'VERSION = "1.1"\nDEBUG = False\nWORKERS = 8\nRETRIES = 3\n'


class TaskExecutor:
    """The sample task's executor: the host's ``execute_steps`` loop, steps that edit files.

    ``stall`` is the step during which ``execute`` writes ``marker`` and then waits: the
    moment the demo's parent kills the child.
    """

    def __init__(self, workdir: Path, stall: dict[str, Any] | None = None, marker: Path | None = None,
                 parent: int | None = None):
        self.workdir = Path(workdir)
        self.saga_manager = None
        self._current_task_id: int | None = None
        self._stall, self._marker, self._parent = stall, marker, parent

    def execute(self, step: dict[str, Any]) -> dict[str, Any]:
        if step is self._stall and self._marker is not None:
            self._marker.write_text(str(os.getpid()))
            _stall(self._parent)
        path = self.workdir / step["path"]
        kind = step["type"]
        if kind == "write":
            path.write_text(step["content"])
        elif kind == "append":
            with open(path, "a") as handle:
                handle.write(step["content"])
        elif kind == "search_replace":
            text = path.read_text()
            if step["search"] not in text:
                return {"success": False, "error": f"SEARCH text not found in {path.name}"}
            path.write_text(text.replace(step["search"], step["replace"], 1))
        elif kind == "compile":
            try:
                compile(path.read_text(), str(path), "exec")
            except SyntaxError as exc:
                return {"success": False, "error": f"{path.name}: {exc}"}
        else:
            return {"success": False, "error": f"unknown step type {kind!r}"}
        return {"success": True}

    def execute_steps(self, steps: Iterable[dict[str, Any]], saga_tx: Any = None) -> list[dict[str, Any]]:
        """The host's loop: run steps in order, stop at the first failure."""
        results: list[dict[str, Any]] = []
        for step in steps:
            result = self.execute(step)
            results.append(result)
            if result.get("success") and saga_tx and self.saga_manager:
                self.saga_manager.register_step(saga_tx, step, result)
            if not result.get("success"):
                break
        return results


def _stall(parent: int | None) -> None:
    """Wait to be killed; if the demo (pid ``parent``) is killed first, end rather than linger."""
    deadline = time.monotonic() + STALL_SECONDS
    while time.monotonic() < deadline:
        if parent is not None and os.getppid() != parent:
            os._exit(1)
        time.sleep(0.05)


def prepare_workspace(workspace: Path) -> None:
    (workspace / "app").mkdir(parents=True)
    (workspace / CONFIG).write_text(INITIAL_CONFIG)


# -- attempt 1: a child process, killed in step 3 -------------------------------------------

def child_main(argv: list[str]) -> int:
    """``python -m jr_checkpoint.demo --child WORKSPACE TASK_ID PARENT_PID``; the database from the env."""
    workspace, task_id, parent = Path(argv[1]), int(argv[2]), int(argv[3])
    _end_with_parent(parent)
    install(target=TARGET, queue_client=None)
    steps = sample_steps()
    executor = TaskExecutor(workspace, stall=steps[CRASH_STEP], marker=workspace / MARKER, parent=parent)
    executor._current_task_id = task_id
    executor.execute_steps(steps)
    return 0


def _end_with_parent(parent: int) -> None:
    """If the demo is killed, its child must not run on alone (and race the next demo's task).

    On Linux the kernel kills the child with its parent (PR_SET_PDEATHSIG); elsewhere the
    child notices while it waits in step 3.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # died before that
        os._exit(1)


def _child_env(target: Target) -> dict[str, str]:
    env = dict(os.environ)
    if target.params:
        env[ENV_DSN] = db.make_dsn(**target.params)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def crash_in_child(target: Target, workspace: Path, task_id: int, timeout: float = 30.0) -> int:
    """Run the task in a child; SIGKILL it once it is inside step 3. Returns the child's pid."""
    marker = workspace / MARKER
    command = [sys.executable, "-m", "jr_checkpoint.demo", "--child", str(workspace), str(task_id),
               str(os.getpid())]
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, env=_child_env(target), stdout=subprocess.DEVNULL,
                                 stderr=errors)
        try:
            deadline = time.monotonic() + timeout
            while not marker.exists():
                if child.poll() is not None or time.monotonic() > deadline:
                    child.kill()
                    child.wait()
                    errors.seek(0)
                    tail = errors.read().decode(errors="replace").strip().splitlines()[-1:]
                    raise CheckpointError(f"the demo's child process did not reach step {CRASH_STEP} "
                                          f"(exit {child.returncode}): {' '.join(tail) or 'no output'}")
                time.sleep(0.01)
            os.kill(child.pid, signal.SIGKILL)
        finally:  # also when the demo itself is interrupted: the child must not outlive it
            if child.poll() is None:
                child.kill()
            child.wait()
    marker.unlink()
    return child.pid


# -- attempt 2, and what a retry without checkpoints would do ---------------------------------

def plain_retry(workspace: Path) -> str:
    """Retry a copy of the crashed workspace without the library: what breaks, in one line."""
    with tempfile.TemporaryDirectory(prefix="jr-checkpoint-plain-") as scratch:
        copy = Path(shutil.copytree(workspace, Path(scratch) / "workspace"))
        results = TaskExecutor(copy).execute_steps(sample_steps())
    for number, result in enumerate(results):
        if not result.get("success"):
            return f"stops at step {number}: {result.get('error')}"
    return "ran every step again"


def checkpointed_retry(store: CheckpointStore, workspace: Path, task_id: int) -> list[dict[str, Any]]:
    if installed():
        raise CheckpointError("jr_checkpoint.install() is already active in this process; "
                              "run the demo in a process of its own")
    install(store=store, target=TARGET, queue_client=None, wait=LOCK_WAIT)
    try:
        executor = TaskExecutor(workspace)
        executor._current_task_id = task_id
        return executor.execute_steps(sample_steps())
    finally:
        uninstall()


# -- the whole demo ---------------------------------------------------------------------------

@dataclass
class DemoReport:
    task_id: int
    workspace: Path
    child_pid: int
    steps: list[dict[str, Any]]
    first: list[str]  # per step: what attempt 1 did
    second: list[str]  # per step: what attempt 2 did
    resume_at: int
    attempts_before_retry: int | None
    plain_retry: str
    final_config: str
    finished: bool


def _first_outcomes(recorded: dict[str, Any] | None, count: int) -> list[str]:
    by_number = {s["step_number"]: s["execution_result"] for s in (recorded or {}).get("steps", [])}
    outcomes = []
    for number in range(count):
        result = by_number.get(number)
        if result == "success":
            outcomes.append("ran")
        elif result is not None:
            outcomes.append(f"ran, {result}")
        else:
            outcomes.append("crashed (SIGKILL)" if number == CRASH_STEP else "not reached")
    return outcomes


def _second_outcomes(results: list[dict[str, Any]], count: int) -> list[str]:
    outcomes = []
    for number in range(count):
        if number >= len(results):
            outcomes.append("not reached")
        elif results[number].get("checkpoint_hit"):
            outcomes.append("skipped (checkpoint)")
        elif results[number].get("success"):
            outcomes.append("ran")
        else:
            outcomes.append(f"ran, failed: {results[number].get('error')}")
    return outcomes


def _finished(task: dict[str, Any] | None) -> bool:
    """After the retry: the task's checkpoint row is gone (its history stays)."""
    return task is not None and task["checkpoint"] is None


def run(target: Target, out: Callable[[str], None] = lambda line: None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> DemoReport:
    """The whole demo on ``target``: tables, a crash, a resume; the task's history is kept."""
    schema.create_tables(target, connect_timeout)
    out("tables ready: jr_step_rewards, jr_task_checkpoints (created if they were missing)")
    task_id = reports.next_demo_task_id(target)
    steps = sample_steps()
    with tempfile.TemporaryDirectory(prefix="jr-checkpoint-demo-") as scratch, \
            contextlib.closing(CheckpointStore(target, connect_timeout=connect_timeout)) as store:
        workspace = Path(scratch) / "workspace"
        prepare_workspace(workspace)
        out(f"task {task_id}: {len(steps)} steps editing {CONFIG} in {workspace}")
        out(f"attempt 1: a child process runs the task and is killed with SIGKILL inside step {CRASH_STEP}")
        pid = crash_in_child(target, workspace, task_id)
        recorded = store.load_task(task_id)
        checkpoint = (recorded or {}).get("checkpoint") or {}
        plain = plain_retry(workspace)
        out(f"a plain retry, without checkpoints, {plain}")
        out("attempt 2: the same task again, in this process, with checkpoints")
        results = checkpointed_retry(store, workspace, task_id)
        data = checkpoint.get("checkpoint_data") or {}
        return DemoReport(
            task_id=task_id, workspace=workspace, child_pid=pid, steps=steps,
            first=_first_outcomes(recorded, len(steps)), second=_second_outcomes(results, len(steps)),
            resume_at=checkpoint.get("last_completed_step", -1) + 1,
            attempts_before_retry=data.get("attempts") if isinstance(data, dict) else None,
            plain_retry=plain, final_config=(workspace / CONFIG).read_text(),
            finished=_finished(store.load_task(task_id)),
        )

if __name__ == "__main__":
    if sys.argv[1:2] != ["--child"]:
        sys.exit("usage: python -m jr_checkpoint.demo --child WORKSPACE TASK_ID PARENT_PID "
                 "(run `jr-checkpoint demo`)")
    from jr_checkpoint import demo as _demo  # the importable module, which install() patches

    sys.exit(_demo.child_main(sys.argv[1:]))
