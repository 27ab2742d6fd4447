"""The literal path end to end: patch a copy of the host stand-in with `jr-checkpoint patch`,
then run the seed's own check and a failing-then-retried task on real PostgreSQL.

Every host run happens in a subprocess whose only host code is the patched copy (PYTHONPATH),
so the stand-in modules other tests import in this process cannot be mixed up with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jr_checkpoint import cli
from tests.conftest import HOST_ROOT, query
from tests.seed_text import verification_snippet

TASK_ID = 4242

# Runs one attempt of a task through the (patched or not) TaskExecutor of the root on PYTHONPATH.
RUN_ATTEMPT = r"""
import json, sys
from pathlib import Path
import jr_executor.task_executor as module
root, workdir, task_id, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
assert Path(module.__file__).resolve().is_relative_to(Path(root).resolve()), module.__file__
executor = module.TaskExecutor(workdir)
executor._current_task_id = task_id
results = executor.execute_steps(steps)
print("RESULT " + json.dumps({"results": results, "executed": executor.executed}))
"""

FIRST_ATTEMPT = [
    {"type": "append", "path": "notes.txt", "content": "started\n"},
    {"type": "search_replace", "path": "settings.txt", "search": "mode = draft", "replace": "mode = final"},
    {"type": "fail", "error": "disk full"},
    {"type": "append", "path": "notes.txt", "content": "done\n"},
]
# The retry fixes step 2. Steps 0 and 1 are unchanged and neither may run twice: the append
# would repeat its line and the edit, its SEARCH text gone, would fail.
RETRY = [*FIRST_ATTEMPT[:2], {"type": "append", "path": "notes.txt", "content": "fixed\n"},
         FIRST_ATTEMPT[3]]
SKIPPED = {"success": True, "skipped": True, "checkpoint_hit": True}


@pytest.fixture
def workdir(tmp_path) -> Path:
    """Where the task's steps work: one file its edit step changes."""
    path = tmp_path / "work"
    path.mkdir()
    (path / "settings.txt").write_text("mode = draft\n")
    return path


@pytest.fixture
def host(tmp_path) -> Path:
    copy = tmp_path / "host"
    shutil.copytree(HOST_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def patch_host(root: Path, capsys) -> None:
    assert cli.main(["patch", "apply", "--root", str(root), "01", "02"]) == 0
    assert capsys.readouterr().out.count(": applied\n") == 2


def run_python(root: Path, code: str, *args: str, dsn: str | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(root)}
    if dsn:
        env["JR_HOST_DB_DSN"] = dsn
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=root.parent, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def seed_check(root: Path) -> str:
    """The seed's "After all steps" snippet, with the copy in place of the host's root."""
    code = verification_snippet()
    assert "'/ganuda'" in code
    return run_python(root, code.replace("'/ganuda'", repr(str(root))))


def attempt(root: Path, workdir: Path, steps: list[dict], dsn: str) -> tuple[dict, str]:
    out = run_python(root, RUN_ATTEMPT, str(root), str(workdir), str(TASK_ID), json.dumps(steps),
                     dsn=dsn)
    result_line = [line for line in out.splitlines() if line.startswith("RESULT ")]
    return json.loads(result_line[-1][len("RESULT "):]), out


def step_rewards(dsn: str) -> list[tuple[int, str]]:
    return query(dsn, "SELECT step_number, execution_result FROM jr_step_rewards "
                      "WHERE task_id = %s ORDER BY step_number", (TASK_ID,))


def test_seed_verification_snippet_passes_on_the_patched_copy(host, capsys):
    patch_host(host, capsys)
    assert seed_check(host) == ("save_checkpoint: True\nget_last_checkpoint: True\n"
                                "cleanup_checkpoints: True\nAll checkpoint methods present\n")


def test_seed_verification_snippet_tells_an_unpatched_copy(host):
    assert seed_check(host).startswith("save_checkpoint: False\n")


def test_patched_stand_in_skips_finished_steps_on_retry(host, workdir, capsys, dsn):
    patch_host(host, capsys)

    first, out = attempt(host, workdir, FIRST_ATTEMPT, dsn)
    assert first["executed"] == FIRST_ATTEMPT[:3]
    assert [result["success"] for result in first["results"]] == [True, True, False]
    assert "[CHECKPOINT]" not in out
    assert step_rewards(dsn) == [(0, "success"), (1, "success"), (2, "failed")]

    retry, out = attempt(host, workdir, RETRY, dsn)
    assert out.splitlines()[:2] == ["[CHECKPOINT] Step 0 already succeeded, skipping",
                                    "[CHECKPOINT] Step 1 already succeeded, skipping"]
    assert "Step 2 already succeeded" not in out
    assert retry["executed"] == RETRY[2:]  # the finished write and edit did not run again
    assert retry["results"][:2] == [SKIPPED, SKIPPED]
    assert [result["success"] for result in retry["results"]] == [True] * 4
    assert (workdir / "notes.txt").read_text() == "started\nfixed\ndone\n"
    assert (workdir / "settings.txt").read_text() == "mode = final\n"
    assert step_rewards(dsn) == [(0, "success"), (1, "success"), (2, "success"), (3, "success")]


def test_unpatched_stand_in_reruns_finished_steps_and_fails(host, workdir, dsn):
    """The control: without the patch the retry repeats step 0 and breaks on step 1."""
    attempt(host, workdir, FIRST_ATTEMPT, dsn)
    retry, out = attempt(host, workdir, RETRY, dsn)
    assert "[CHECKPOINT]" not in out
    assert retry["executed"] == RETRY[:2]
    assert retry["results"][1] == {"success": False, "error": "SEARCH text not found in settings.txt"}
    assert (workdir / "notes.txt").read_text() == "started\nstarted\n"
    assert step_rewards(dsn) == []


CHECKPOINT_METHODS = r"""
import json
from jr_executor.jr_queue_client import JrQueueClient
client = JrQueueClient('test')
saved = client.save_checkpoint(7, 2, total_steps=4, checkpoint_data={'files': ['notes.txt']})
print(json.dumps([saved, client.get_last_checkpoint(7), client.cleanup_checkpoints(7),
                  client.get_last_checkpoint(7)]))
client.close()
"""


def test_patched_queue_client_checkpoint_methods_use_the_migrated_table(host, capsys, dsn):
    patch_host(host, capsys)
    out = run_python(host, CHECKPOINT_METHODS, dsn=dsn)
    assert json.loads(out) == [
        True, {"last_completed_step": 2, "total_steps": 4, "checkpoint_data": {"files": ["notes.txt"]}},
        True, None]
    assert query(dsn, "SELECT count(*) FROM jr_task_checkpoints") == [(0,)]


def test_decorator_patch_yields_a_host_file_that_imports_with_the_decorator(host, capsys):
    assert cli.main(["patch", "apply", "--root", str(host), "03"]) == 0
    out = run_python(host, "import jr_executor.task_executor as m; "
                           "f = m.TaskExecutor.__dict__['execute_steps']; "
                           "print(f.__wrapped__.__qualname__, f is not f.__wrapped__)")
    assert out == "TaskExecutor.execute_steps True\n"


WORKER = Path(__file__).with_name("worker.py")


def decorated_attempt(workdir: Path, steps: list[dict], dsn: str, task_id: int) -> list[dict]:
    """One attempt through install() on the untouched stand-in (tests/integration/worker.py)."""
    steps_file = workdir.parent / f"steps-{len(list(workdir.parent.iterdir()))}.json"
    steps_file.write_text(json.dumps(steps))
    done = subprocess.run([sys.executable, str(WORKER), dsn, str(task_id), str(workdir),
                           str(steps_file)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_decorator_and_patched_source_record_the_same_outcomes(host, workdir, tmp_path, capsys, dsn):
    patch_host(host, capsys)
    attempt(host, workdir, FIRST_ATTEMPT, dsn)
    attempt(host, workdir, RETRY, dsn)

    other = tmp_path / "work-decorated"
    other.mkdir()
    (other / "settings.txt").write_text("mode = draft\n")
    decorated_task = TASK_ID + 1
    first = decorated_attempt(other, FIRST_ATTEMPT, dsn, decorated_task)
    assert [r["success"] for r in first] == [True, True, False]
    after_first = query(dsn, "SELECT step_number, execution_result FROM jr_step_rewards "
                             "WHERE task_id = %s ORDER BY step_number", (decorated_task,))
    assert after_first == [(0, "success"), (1, "success"), (2, "failed")]
    retry = decorated_attempt(other, RETRY, dsn, decorated_task)
    assert [r.get("skipped", False) for r in retry] == [True, True, False, False]

    decorated = query(dsn, "SELECT step_number, execution_result FROM jr_step_rewards "
                           "WHERE task_id = %s ORDER BY step_number", (decorated_task,))
    assert decorated == step_rewards(dsn)
    for name in ("notes.txt", "settings.txt"):
        assert (other / name).read_text() == (workdir / name).read_text()
    # Where they differ by design: only the decorator stores the step's content hash.
    hashes = query(dsn, "SELECT task_id, bool_and(step_content_hash IS NOT NULL) FROM jr_step_rewards "
                        "GROUP BY task_id ORDER BY task_id")
    assert hashes == [(TASK_ID, False), (decorated_task, True)]
