"""Shared test doubles: a minimal file executor and an in-memory ledger.

Unit tests use :class:`FakeStore`; tests of the decorator's mechanics on real PostgreSQL use
:class:`FileExecutor`. Tests about the host itself use the stand-in in ``tests/host``.
"""

import math
import subprocess
import threading
import time
from pathlib import Path

from jr_checkpoint.errors import TaskOwnershipLost
from jr_checkpoint.ledger import StepRecord, TaskState


class FileExecutor:
    """A minimal executor for the decorator's mechanics: simple steps on files under ``workdir``.

    Step types: ``write``, ``append``, ``search_replace`` (fails when its SEARCH text is
    absent: re-running a finished edit fails, the harm the library prevents), ``shell``,
    ``fail``, ``raise``. ``executed`` lists every step ``execute()`` really ran. The host's own
    shape (process_queue_task, its step dicts, its extraction) is the stand-in in tests/host.
    """

    def __init__(self, workdir, saga_manager=None):
        self.workdir = Path(workdir)
        self.saga_manager = saga_manager
        self._current_task_id = None
        self.executed = []  # every step execute() really ran, in order

    def _path(self, step):
        return self.workdir / step.get('path', step.get('filepath', ''))

    def execute(self, step):
        """Run one step and say how it went."""
        self.executed.append(step)
        kind = step.get('type')
        if kind == 'write':
            path = self._path(step)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(step['content'])
            return {'success': True, 'path': str(path)}
        if kind == 'append':
            with open(self._path(step), 'a') as handle:
                handle.write(step['content'])
            return {'success': True}
        if kind == 'search_replace':
            path = self._path(step)
            text = path.read_text()
            if step['search'] not in text:
                return {'success': False, 'error': f"SEARCH text not found in {path.name}"}
            path.write_text(text.replace(step['search'], step['replace'], 1))
            return {'success': True}
        if kind == 'shell':
            done = subprocess.run(step['command'], shell=True, cwd=self.workdir,
                                  capture_output=True, text=True)
            return {'success': done.returncode == 0, 'returncode': done.returncode,
                    'error': done.stderr.strip() or None}
        if kind == 'fail':
            return {'success': False, 'error': step.get('error', 'step failed')}
        if kind == 'raise':
            raise RuntimeError(step.get('message', 'step raised'))
        return {'success': False, 'error': f"unknown step type {kind!r}"}

    def execute_steps(self, steps, saga_tx=None):
        """Run steps in order; stop at the first failure."""
        results = []
        for step in steps:
            result = self.execute(step)
            results.append(result)

            # Phase 10: Register completed step for potential rollback
            if result.get('success') and saga_tx and self.saga_manager:
                self.saga_manager.register_step(saga_tx, step, result)

            if not result.get('success'):
                break
        return results


def checkpointed_executor(workdir, task_id, **options):
    """A :class:`FileExecutor` on ``workdir`` for ``task_id``, its execute_steps checkpointed
    with ``options`` (those of ``@checkpointed_steps``)."""
    from jr_checkpoint import checkpointed_steps

    class Checkpointed(FileExecutor):
        execute_steps = checkpointed_steps(**options)(FileExecutor.execute_steps)

    executor = Checkpointed(workdir)
    executor._current_task_id = task_id
    return executor


class FakeStore:
    """The part of CheckpointStore the decorator uses (jr_checkpoint.ledger.Ledger), in memory,
    counting calls."""

    def __init__(self):
        self.rows: dict[tuple[int, int], dict] = {}
        self.checkpoints: dict[int, dict] = {}
        self.held: set[int] = set()
        self.calls: list[str] = []
        self.taken_over: set[int] = set()  # tasks another worker took from this one
        self.ended: dict[int, list] = {}  # task -> the AttemptEnd of each ended attempt
        self.unchecked: list[tuple] = []
        self.lease = 30.0
        self.clock = time.monotonic
        self.target = None  # no database: an on_task_finished hook hears nothing
        self.connect_timeout = 5
        self.leases: dict[tuple[int, str], float] = {}
        self.lock = threading.Lock()

    def begin_task(self, task_id, total_steps=None, *, wait=0.0):
        with self.lock:
            self.calls.append("begin")
            if task_id in self.held:
                return None
            self.held.add(task_id)
        cp = self.checkpoints.setdefault(task_id, {"checkpoint_data": {"attempts": 0}})
        cp["checkpoint_data"]["attempts"] += 1
        steps = {n: StepRecord(n, r["execution_result"], r["content_hash"],
                                r.get("step_type"), r.get("target_file"))
                 for (t, n), r in self.rows.items() if t == task_id}
        return TaskState(cp["checkpoint_data"]["attempts"], dict(cp), steps, owner=f"owner-{task_id}")

    def hold(self, task_id, owner, lease_until=math.inf):
        self.calls.append("hold")
        self.leases[(task_id, owner)] = lease_until

    def lease_until(self, task_id, owner):
        return self.leases.get((task_id, owner), -math.inf)

    def forget_lease(self, task_id, owner):
        self.leases.pop((task_id, owner), None)

    def note_unchecked(self, task_id, ran, failed):
        self.calls.append("note_unchecked")
        self.unchecked.append((task_id, ran, failed))

    def lost(self, task_id, owner):
        return task_id in self.taken_over

    def record_step(self, task_id, step_number, *, owner, patient=True, end=None, **fields):
        self.calls.append("record")
        if task_id in self.taken_over:
            raise TaskOwnershipLost(f"task {task_id}: another worker took it over; stopping")
        self.rows[(task_id, step_number)] = fields
        self.checkpoints.setdefault(task_id, {"checkpoint_data": {"attempts": 1}})
        self.checkpoints[task_id]["last_completed_step"] = fields["last_completed_step"]
        if end is not None:  # the last step's record ends the attempt, as the real one does
            self._end(task_id, owner, True, end)

    def release_task(self, task_id, owner, *, completed, exhausted=False, end=None, patient=True):
        self.calls.append("release")
        if task_id in self.taken_over:
            self.ended.setdefault(task_id, []).append(end)
            return "lost"
        return self._end(task_id, owner, completed, end)

    def _end(self, task_id, owner, completed, end):
        self.held.discard(task_id)
        self.leases.pop((task_id, owner), None)
        self.ended.setdefault(task_id, []).append(end)
        if completed:
            return "released" if self.checkpoints.pop(task_id, None) is not None else "kept"
        return "kept"

    def results(self, task_id):
        return {n: r["execution_result"] for (t, n), r in sorted(self.rows.items()) if t == task_id}


class Executor:
    """A minimal host: execute() logs what it ran; steps say whether they succeed."""

    def __init__(self, task_id=1):
        self._current_task_id = task_id
        self.ran = []

    def execute(self, step):
        self.ran.append(step)
        if isinstance(step, dict) and step.get("raise"):
            raise ValueError(step["raise"])
        if isinstance(step, dict) and "result" in step:
            return step["result"]
        return {"success": not (isinstance(step, dict) and step.get("fail"))}

    def execute_steps(self, steps, saga_tx=None):
        """Run the steps in order."""
        results = []
        for step in steps:
            result = self.execute(step)
            results.append(result)
            if not result.get("success"):
                break
        return results


class QueueExecutor(Executor):
    """An executor with the host's entry point: process_queue_task(task) runs task['steps']."""

    def __init__(self):
        super().__init__(task_id=None)

    def process_queue_task(self, task):
        return self.execute_steps(task["steps"])
