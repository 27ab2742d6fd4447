"""A resumed task passes the real worker's gates after a run (tests/integration/host_gates.py):
its no-work check and claim_verifier.verify_jr_task_result, HALLUCINATION flag included.

Each task runs twice through the host stand-in with jr-checkpoint installed, in separate
processes, as the whole-task retry does; the files its skipped steps wrote are on disk from
the first attempt. The instruction names its files by relative paths only, so the verifier's
disk check can find them only through the results of the steps, skipped ones included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_real_host import run_task

GATES = Path(__file__).with_name("host_gates.py")
FILES = ("app/settings.txt", "app/greet.py")
# Files as real as the verifier wants them: 150 bytes or more, the last line a finished one.
SETTINGS = ("# Settings of the greeting service.\nname = demo\nmode = draft\nlanguage = en\n"
            "timeout_seconds = 30\nretries = 2\n# Edited by the Jr executor; see the task's log.\n")
GREET = ("    def greet(self, name: str) -> str:\n"
         "        '''Say hello to someone by name, in the configured language.'''\n"
         "        if not name:\n"
         "            raise ValueError('a name is needed to greet someone')\n"
         "        return f'hello, {name}'\n")
FENCE = "```"


def instruction(flaky: str = "test -f go.flag") -> str:
    """A Jr instruction like the host's, its files named by relative paths only."""
    return f"""# Jr Instruction: greet

Create `app/greet.py` and add this method:

{FENCE}python
{GREET}{FENCE}

File: `app/settings.txt`

{FENCE}text
<<<<<<< SEARCH
mode = draft
=======
mode = final
>>>>>>> REPLACE
{FENCE}

Run the check:

{FENCE}bash
echo check >> journal.txt && {flaky}
{FENCE}

Then record it:

{FENCE}bash
echo done >> journal.txt
{FENCE}
"""


@pytest.fixture
def root(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "settings.txt").write_text(SETTINGS)
    return tmp_path


def gates(root: Path, task: dict, result: dict) -> tuple[dict, str]:
    spec = root / "gates.json"
    spec.write_text(json.dumps({"task": task, "result": result}))
    done = subprocess.run([sys.executable, str(GATES), str(spec)], capture_output=True, text=True,
                          timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):]), done.stdout


def the_task() -> dict:
    return {"id": 3141, "task_id": "JR-3141", "title": "greet", "instruction_content": instruction()}


def test_a_retry_whose_steps_were_all_skipped_passes_the_gates(host_db, root):
    (root / "go.flag").touch()
    first, _ = run_task(host_db, root, instruction())
    judged, lines = gates(root, the_task(), first)
    assert judged["success"], lines  # the first attempt passes them: the retry must, too
    second, out = run_task(host_db, root, instruction())
    steps = second["steps_executed"]
    assert [step.get("skipped") for step in steps] == [True] * 4, out.stdout
    assert [(step.get("type"), step.get("path")) for step in steps] == [
        ("search_replace", str(root / FILES[0])), ("file", str(root / FILES[1])),
        ("bash", None), ("bash", None)]
    judged, lines = gates(root, the_task(), second)
    assert (judged["success"], judged.get("error")) == (True, None), lines
    assert "Claim verifier PASSED" in lines
    # The files were found on disk through the skipped steps' paths (each harvested twice, by
    # key and as a path-like value: 4 passed); without them it is a HALLUCINATION (the control).
    verdict = judged["claim_verification"]
    assert (verdict["hallucination_flag"], verdict["passed"], verdict["failed"]) == (False, 4, 0)


def test_the_control_the_seeds_skipped_result_is_called_a_hallucination(host_db, root):
    """The gate is real: the same retry, with skipped results as the seed's loop (patch 01)
    builds them (no path, no type), is refused."""
    (root / "go.flag").touch()
    run_task(host_db, root, instruction())
    second, _ = run_task(host_db, root, instruction())
    second["steps_executed"] = [{"success": True, "skipped": True, "checkpoint_hit": True}] * 4
    judged, _ = gates(root, the_task(), second)
    assert judged["success"] is False
    assert judged["error"] == ("Claim verifier: HALLUCINATION: success claimed with 4 steps but zero "
                               "artifacts/files and zero verifiable claims")


def test_a_retry_that_skipped_the_file_writing_steps_passes_the_gates(host_db, root):
    first, _ = run_task(host_db, root, instruction())  # the check fails: go.flag is missing
    assert not first["success"]
    (root / "go.flag").touch()
    second, _ = run_task(host_db, root, instruction())
    assert second["success"]
    assert [bool(step.get("skipped")) for step in second["steps_executed"]] == [True, True, False, False]
    judged, lines = gates(root, the_task(), second)
    assert (judged["success"], judged.get("error")) == (True, None), lines
    assert "Pre-flight gate not available (non-fatal)" in lines  # as on the host: no preflight_gate.py
    assert "Claim verifier PASSED" in lines


def test_a_success_with_no_steps_is_still_refused(root):
    """The no-work check is live in this bed: a success with nothing in it fails."""
    judged, _ = gates(root, the_task(), {"success": True, "steps_executed": []})
    assert (judged["success"], judged["error"]) == (
        False, "No work performed (0 steps, 0 artifacts, 0 real files)")
