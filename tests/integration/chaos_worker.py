"""A worker for the chaos test: runs every task it can take until every task is finished.

    python chaos_worker.py DSN JOURNAL_DIR TASKS_JSON

Each step appends `start TASK STEP PID TIME` and `end TASK STEP PID TIME` to the task's journal
(O_APPEND: lines never interleave). A step marked `gate` waits, after its start line, for a
file `go-PID-TASK-STEP` that the test creates, or kills the worker instead: so a kill always
lands inside a step, never between a step and its record.
"""

import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jr_checkpoint import CheckpointStore, TaskLockedError, checkpointed_steps  # noqa: E402
from jr_checkpoint.errors import CheckpointError  # noqa: E402


def main() -> int:
    dsn, journal_dir, tasks_file = sys.argv[1:4]
    journals = Path(journal_dir)
    tasks = {int(k): v for k, v in json.loads(Path(tasks_file).read_text()).items()}
    store = CheckpointStore(dsn, lease=10.0, outage=15.0)
    pid = os.getpid()

    def note(task, step, what):
        line = f"{what} {task} {step} {pid} {time.time():.6f}\n".encode()
        fd = os.open(journals / f"task-{task}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    class Worker:
        def __init__(self, task_id):
            self._current_task_id = task_id

        def execute(self, step):
            task, number = step["task"], step["n"]
            note(task, number, "start")
            if step.get("gate"):
                go = journals / f"go-{pid}-{task}-{number}"
                deadline = time.monotonic() + 60
                while not go.exists():
                    if time.monotonic() > deadline:
                        return {"success": False, "error": "the test never answered the gate"}
                    time.sleep(0.005)
            else:
                time.sleep(step["ms"] / 1000)
            note(task, number, "end")
            return {"success": True}

        @checkpointed_steps(store=store, wait=0)
        def execute_steps(self, steps):
            results = []
            for step in steps:
                results.append(self.execute(step))
                if not results[-1]["success"]:
                    break
            return results

    def finished(task_id):
        task = store.load_task(task_id)
        return (task is not None and task["checkpoint"] is None
                and sum(s["execution_result"] == "success" for s in task["steps"]) == len(tasks[task_id]))

    rng = random.Random(pid)
    done: set[int] = set()
    while len(done) < len(tasks):
        order = [t for t in tasks if t not in done]
        rng.shuffle(order)
        for task_id in order:
            try:
                if finished(task_id):
                    done.add(task_id)
                    continue
                Worker(task_id).execute_steps(tasks[task_id])
            except TaskLockedError:
                continue  # another worker has it (or took it over)
            except CheckpointError:
                time.sleep(0.05)  # the server is restarting: try again
        time.sleep(0.01)
    return 0


if __name__ == "__main__":
    sys.exit(main())
