"""Run the real worker's gates after a run on a task's result, as the worker runs them.

    python host_gates.py TASK_AND_RESULT_JSON_FILE

The gates are the code of `jr_queue_worker.py` (dereadi/ganuda_ai at ab76068, a copy in
tests/data/ganuda_ai) from its no-work check (`# P0 FIX Jan 27, 2026`) to just before it
completes the task: the no-work check, `preflight_gate` (not in the repository: the worker
says it is not available and goes on) and `claim_verifier.verify_jr_task_result` with its
HALLUCINATION flag. That text is read from the file and run unchanged, in the worker's names
(`task`, `result`, `self.jr_name`), with the real `jr_executor.claim_verifier` importable. Prints
the worker's lines, then the result after the gates as one JSON line after `RESULT `.
"""

import json
import sys
import textwrap
import types
from pathlib import Path

HOST = Path(__file__).resolve().parents[1] / "data" / "ganuda_ai"
START = "# P0 FIX Jan 27, 2026: Defense in depth - validate work was done"
END = ("if result.get('success'):\n"
       "                            print(f\"[{self.jr_name}] Task completed successfully\")")


def gate_code() -> str:
    text = (HOST / "jr_executor" / "jr_queue_worker.py").read_text()
    start = text.index(START)
    start = text.rindex("\n", 0, start) + 1  # from the start of its line
    end = text.index(END, start)
    end = text.rindex("\n", 0, end) + 1
    return textwrap.dedent(text[start:end])


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    sys.path.insert(0, str(HOST))  # `from jr_executor.claim_verifier import ...`, as the worker does
    names = {"task": spec["task"], "result": spec["result"],
             "self": types.SimpleNamespace(jr_name="Software Engineer Jr.")}
    exec(compile(gate_code(), "jr_queue_worker.py (gates)", "exec"), names)
    print("RESULT " + json.dumps(names["result"], default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
