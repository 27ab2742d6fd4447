"""jr-checkpoint on the host as it really runs: install() with no argument, the task id from
process_queue_task(task), markdown instructions extracted by the host stand-in, whole-task
retries in separate processes, the in-process retry on a shorter list, a self-critique that
reorders, drops and duplicates steps, and rows the host's own helpers wrote.

Every run is a real process (tests/integration/host_task.py) on real PostgreSQL; what ran is
read from the files the steps change and from a journal the bash steps append to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HOST_ROOT, host_env, query

RUNNER = Path(__file__).with_name("host_task.py")
TASK_ID = 3141

GREET = "    def greet(self):\n        return 'hi'\n"


def instruction(*, replace="mode = final", flaky="test -f go.flag", extra=""):
    """A Jr instruction like the host's: a Create block, a SEARCH/REPLACE block, two bash blocks."""
    return f"""# Jr Instruction: greet

Create `app/greet.py` and add this method:

```python
{GREET}```

File: `app/settings.txt`

```text
<<<<<<< SEARCH
mode = draft
=======
{replace}
>>>>>>> REPLACE
```

Run the check:

```bash
echo check >> journal.txt && {flaky}
```

Then record it:

```bash
echo done >> journal.txt
```
{extra}"""


@pytest.fixture
def root(tmp_path):
    """GANUDA_ROOT: the files the task edits, as they were before it."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "settings.txt").write_text("name = demo\nmode = draft\n")
    return tmp_path


def run_task(dsn, root, content, *flags, critic=None, reflection=None, task_id=TASK_ID,
             env_extra=None):
    spec = {"task": {"id": task_id, "task_id": f"JR-{task_id}", "title": "greet",
                     "instruction_content": content},
            "critic": critic, "reflection": reflection}
    task_file = root / f"task-{os.urandom(4).hex()}.json"
    task_file.write_text(json.dumps(spec))
    env = {**os.environ, **host_env(dsn, root), **(env_extra or {})}
    done = subprocess.run([sys.executable, str(RUNNER), str(task_file), *flags], env=env,
                          capture_output=True, text=True, timeout=120, cwd=HOST_ROOT / "jr_executor")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout + done.stderr
    return json.loads(lines[-1][len("RESULT "):]), done


def journal(root):
    path = root / "journal.txt"
    return path.read_text().split() if path.exists() else []


def greet_count(root):
    return (root / "app" / "greet.py").read_text().count("def greet")


def rows(dsn, task_id=TASK_ID):
    return query(dsn, "SELECT step_number, step_type, target_file, execution_result, step_content_hash "
                      "FROM jr_step_rewards WHERE task_id = %s ORDER BY step_number", (task_id,))


def checkpoint(dsn, task_id=TASK_ID):
    return query(dsn, "SELECT last_completed_step, total_steps, checkpoint_data FROM jr_task_checkpoints "
                      "WHERE task_id = %s", (task_id,))


def test_whole_task_retry_skips_what_succeeded_though_extraction_changed(host_db, root):
    first, out = run_task(host_db, root, instruction())
    assert not first["success"]
    assert journal(root) == ["check"]
    assert [r[3] for r in rows(host_db)] == ["success", "success", "failed"]
    # SEARCH/REPLACE blocks are extracted first: [settings, greet, check, done].
    assert [r[2] for r in rows(host_db)][:2] == [str(root / "app/settings.txt"), str(root / "app/greet.py")]

    (root / "go.flag").touch()
    second, out = run_task(host_db, root, instruction())
    assert second["success"], second
    # The created file's block is a partial_edit now: the same step, not run again.
    assert greet_count(root) == 1
    assert (root / "app" / "settings.txt").read_text() == "name = demo\nmode = final\n"
    assert journal(root) == ["check", "check", "done"]
    # The worker never configured logging: the seed's lines are on its output, as print put them.
    assert "[CHECKPOINT] Step 0 already succeeded, skipping" in out.stdout
    assert "[CHECKPOINT] Step 1 already succeeded, skipping" in out.stdout
    assert f"[CHECKPOINT] task {TASK_ID} complete, checkpoint cleaned up" in out.stdout
    assert checkpoint(host_db) == []
    assert [r[3] for r in rows(host_db)] == ["success"] * 4


def test_without_jr_checkpoint_the_same_retry_does_harm(host_db, root):
    """The control: the harm the library prevents is real on this stand-in."""
    run_task(host_db, root, instruction(), "--no-install")
    (root / "go.flag").touch()
    second, _ = run_task(host_db, root, instruction(), "--no-install")
    assert not second["success"]
    assert "SEARCH text not found" in second["steps_executed"][0]["error"]  # the edit landed before
    assert rows(host_db) == []


def test_an_edited_instruction_runs_the_changed_steps_again(host_db, root):
    run_task(host_db, root, instruction())
    (root / "go.flag").touch()
    (root / "app" / "settings.txt").write_text("name = demo\nmode = draft\n")  # the operator undid it
    result, out = run_task(host_db, root, instruction(replace="mode = released"))
    assert result["success"], result
    assert (root / "app" / "settings.txt").read_text() == "name = demo\nmode = released\n"
    assert greet_count(root) == 1
    assert "Step 0 already succeeded" not in out.stdout
    assert "Step 1 already succeeded" in out.stdout
    # Another command at a position: it runs.
    result, _ = run_task(host_db, root, instruction(replace="mode = released",
                                                    flaky="test -f go.flag && echo again >> journal.txt"))
    assert result["success"]
    assert journal(root) == ["check", "check", "done", "check", "again"]


def test_in_process_retry_on_a_shorter_list(host_db, root):
    """The host's reflection retry drops done paths and runs a shorter list: positions shift."""
    flaky = 'n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; test "$n" -ge 1'
    reflection = {"should_retry": True,
                  "modified_approach": "Also note it:\n\n```bash\necho noted >> journal.txt\n```\n"}
    first, _ = run_task(host_db, root, instruction(flaky=flaky), reflection=reflection)
    assert first["success"] and first["recovered_via_retry"] == 1, first
    # Pass 1 ran settings, greet, check (failed); the retry ran [check, done, noted].
    assert journal(root) == ["check", "check", "done", "noted"]
    recorded = rows(host_db)
    assert [(r[0], r[1], r[3]) for r in recorded] == [
        (0, "search_replace", "success"), (1, "file", "success"), (2, "bash", "success"),
        (3, "bash", "success"), (4, "bash", "success")]
    # A later whole-task retry of the original instruction, in a new process: nothing runs.
    again, out = run_task(host_db, root, instruction(flaky=flaky))
    assert again["success"]
    assert journal(root) == ["check", "check", "done", "noted"]
    assert greet_count(root) == 1
    assert rows(host_db)[:5] == recorded  # no row was taken by another step


def test_reordered_dropped_and_duplicated_steps_are_recognised_wherever_they_stand(host_db, root):
    first, _ = run_task(host_db, root, instruction())
    assert journal(root) == ["check"]
    (root / "go.flag").touch()
    # The self-critique runs [done, check, greet, settings, done]; text appended before extraction.
    spec_critic = [3, 2, 1, 0, 3]
    second, out = run_task(host_db, root, instruction(extra="\nSkill: prefer small edits.\n"),
                           critic=spec_critic)
    assert second["success"], second
    assert greet_count(root) == 1
    assert (root / "app" / "settings.txt").read_text().count("final") == 1
    # done ran twice (two occurrences), check once more: nothing that succeeded ran again.
    assert journal(root) == ["check", "done", "check", "done"]
    assert "Step 2 already succeeded" in out.stdout and "Step 3 already succeeded" in out.stdout
    # A third run with the same list: everything is recognised, nothing runs; a dropped list too.
    third, _ = run_task(host_db, root, instruction(), critic=spec_critic)
    fourth, _ = run_task(host_db, root, instruction(), critic=[0, 3])
    assert third["success"] and fourth["success"]
    assert journal(root) == ["check", "done", "check", "done"]


def test_rows_the_host_helpers_wrote_count_as_success(host_db, root):
    """A team on the literal path switches to install() mid-task: nothing re-runs."""
    first, out = run_task(host_db, root, instruction(), "--no-install", "--set-current-task-id")
    assert journal(root) == ["check"]
    recorded = rows(host_db)
    assert [r[3] for r in recorded] == ["success", "success", "failed"]
    assert recorded[1][2] == ""  # the host's loop looks for the path outside args
    (root / "go.flag").touch()
    second, out = run_task(host_db, root, instruction())
    assert second["success"], second
    assert greet_count(root) == 1
    assert journal(root) == ["check", "check", "done"]


def test_one_path_at_a_time_on_a_host_whose_loop_holds_the_literal_code(host_db, root):
    """install() on a host that also sets _current_task_id: the decorator alone checks and records."""
    first, out = run_task(host_db, root, instruction(), "--set-current-task-id", "--count-connects")
    assert "host connects: 0" in out.stdout  # no per-step connection from the host's helpers
    (root / "go.flag").touch()
    second, out = run_task(host_db, root, instruction(), "--set-current-task-id", "--count-connects")
    assert second["success"]
    assert "host connects: 0" in out.stdout
    assert out.stdout.count("[CHECKPOINT] Step 0 already succeeded, skipping") == 1
    assert journal(root) == ["check", "check", "done"]
    assert all(len(r[4]) == 64 for r in rows(host_db))


def test_configured_logging_gets_each_line_once(host_db, root):
    run_task(host_db, root, instruction())
    (root / "go.flag").touch()
    _, out = run_task(host_db, root, instruction(), "--configure-logging")
    assert "[CHECKPOINT] Step 0 already succeeded" not in out.stdout
    assert out.stderr.count("[CHECKPOINT] Step 0 already succeeded, skipping") == 1


def test_a_task_id_that_is_not_an_integer_runs_unchecked_with_one_warning(host_db, root):
    result, out = run_task(host_db, root, instruction(), task_id="JR-7")
    assert not result["success"]
    assert out.stdout.count("not an integer; running the task unchecked") == 1
    assert query(host_db, "SELECT count(*) FROM jr_step_rewards")[0][0] == 0
