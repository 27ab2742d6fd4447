"""A worker process for the crash and concurrency tests.

    python worker.py DSN TASK_ID WORKDIR STEPS_JSON [WAIT_SECONDS]

Installs jr-checkpoint on tests.fakes.FileExecutor, runs the steps, prints the results as
JSON. Exit status 3 when another worker holds the task.
"""

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jr_checkpoint  # noqa: E402


def main() -> int:
    dsn, task_id, workdir, steps_file = sys.argv[1:5]
    wait = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    jr_checkpoint.install(dsn, wait=wait, target="tests.fakes:FileExecutor.execute_steps")
    from tests.fakes import FileExecutor

    executor = FileExecutor(workdir)
    executor._current_task_id = int(task_id)
    steps = json.loads(Path(steps_file).read_text())
    try:
        results = executor.execute_steps(steps)
    except jr_checkpoint.TaskLockedError as exc:
        print(f"locked: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
