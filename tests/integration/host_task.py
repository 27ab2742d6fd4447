"""Run one queue task through the host stand-in, as its worker does, with jr-checkpoint installed.

    python host_task.py TASK_JSON_FILE [--no-install] [--wait SECONDS] [--set-current-task-id]
                        [--count-connects] [--configure-logging]

Imports the stand-in the way the worker does (top-level `task_executor`, from inside
jr_executor/), installs jr-checkpoint with no DSN (so the host's secrets loader is used),
and prints the task's result as one JSON line after `RESULT `. The task file may carry a
test's stand-ins for the host's LLM: `critic` (a list of positions: the reordered, dropped or
duplicated step list) and `reflection` (what reflect_on_failure returns, `should_retry`
included).
"""

import json
import sys
from pathlib import Path

HOST = Path(__file__).resolve().parents[1] / "host"
sys.path.insert(0, str(HOST / "jr_executor"))


def count_host_connects() -> list:
    """Count psycopg2.connect calls made from the host's task_executor module."""
    import psycopg2

    calls = []
    original = psycopg2.connect

    def connect(*args, **kwargs):
        if sys._getframe(1).f_code.co_filename.endswith("task_executor.py"):
            calls.append(1)
        return original(*args, **kwargs)

    psycopg2.connect = connect
    return calls


def main() -> int:
    task_file = Path(sys.argv[1])
    spec = json.loads(task_file.read_text())
    connects = count_host_connects() if "--count-connects" in sys.argv else None
    if "--configure-logging" in sys.argv:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if "--no-install" not in sys.argv:
        import jr_checkpoint

        wait = float(sys.argv[sys.argv.index("--wait") + 1]) if "--wait" in sys.argv else 0.0
        jr_checkpoint.install(wait=wait)
    from task_executor import TaskExecutor

    executor = TaskExecutor()
    if spec.get("critic") is not None:
        executor.critic = lambda steps, task: [steps[i] for i in spec["critic"]]
    if spec.get("reflection") is not None:
        executor.reflector = lambda task, error, details: dict(spec["reflection"])
    if "--set-current-task-id" in sys.argv:
        executor._current_task_id = spec["task"]["id"]
    result = executor.process_queue_task(spec["task"])
    if connects is not None:
        print(f"host connects: {len(connects)}")
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
