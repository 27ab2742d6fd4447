"""The literal path on the host's real task_executor.py (ab76068, tests/data/ganuda_ai), with
the checkpoint database down: the default patch set must not fail a task whose steps succeed.

The real file's _record_step_result() reports a failed record with logging.getLogger(...), and
the module never imports logging. Patches 01 (already in the file) and 04 make the loop call
it for every step; patch 05 supplies the import. Each run is a subprocess started from the
copy's jr_executor/, as the worker is, calling the real process_queue_task(); the stand-in
gives the real file its lib.secrets_loader and search_replace_editor, and a database port that
refuses connections (bound, never listening) is the server that is down.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jr_checkpoint import cli
from tests.host_copy import EXECUTOR, copy_host

REAL_EXECUTOR = Path(__file__).resolve().parents[1] / "data" / "ganuda_ai" / EXECUTOR

RUN_TASK = r"""
import json, sys
sys.path[:0] = ['.', sys.argv[2]]  # the worker's directory; the root, which the file takes for /ganuda
import task_executor
task = {'id': 7, 'task_id': 'T-7', 'title': 'write notes', 'instruction_content': sys.argv[1]}
try:
    print('RESULT ' + json.dumps(task_executor.TaskExecutor().process_queue_task(task), default=str))
except Exception as exc:
    print('RESULT ' + json.dumps({'raised': type(exc).__name__}))
"""


@pytest.fixture
def real_host(tmp_path) -> Path:
    root = copy_host(tmp_path / "host")
    shutil.copy(REAL_EXECUTOR, root / EXECUTOR)
    return root


@pytest.fixture
def server_down():
    """A port on which nothing listens: every connection is refused at once."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def run_task(root: Path, port: int) -> tuple[dict, str]:
    instruction = f"# Jr Instruction\n\nRun:\n\n```bash\necho hi > {root / 'out.txt'}\n```\n"
    env = {**os.environ, "GANUDA_ROOT": str(root), "CHEROKEE_DB_HOST": "127.0.0.1",
           "CHEROKEE_DB_PORT": str(port), "CHEROKEE_DB_NAME": "zammad", "CHEROKEE_DB_USER": "claude"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", RUN_TASK, instruction, str(root)], cwd=root / "jr_executor",
                          env=env, capture_output=True, text=True, timeout=60)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):]), done.stderr


def patch(*argv: str) -> int:
    return cli.main(["patch", *argv])


def test_patch_check_reports_the_missing_import_on_the_real_file(real_host, capsys):
    assert patch("check", "--root", str(real_host)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"01_task_executor_step_checkpoints.patch block 1 ({EXECUTOR}): already applied"
    assert lines[-1] == f"05_task_executor_logging_import.patch block 1 ({EXECUTOR}): applies cleanly"


def test_without_05_a_failed_record_fails_a_task_whose_steps_succeeded(real_host, server_down):
    """The control: what 01 and 04 alone do to today's host."""
    assert patch("apply", "--root", str(real_host), "01", "02", "04") == 0
    result, _ = run_task(real_host, server_down)
    assert (real_host / "out.txt").read_text() == "hi\n"  # the step ran and succeeded
    assert result["success"] is False
    assert result["error"] == "Execution error: name 'logging' is not defined"


def test_the_default_set_turns_a_failed_record_into_a_logged_warning(real_host, server_down, capsys):
    assert patch("apply", "--root", str(real_host)) == 0
    assert "05_task_executor_logging_import.patch block 1" in capsys.readouterr().out
    result, stderr = run_task(real_host, server_down)
    assert (real_host / "out.txt").read_text() == "hi\n"
    assert (result["success"], result["error"]) == (True, None)
    assert [step["success"] for step in result["steps_executed"]] == [True]
    (warning,) = [line for line in stderr.splitlines() if line.startswith("Step recording failed: ")]
    assert f"port {server_down} failed: Connection refused" in warning
    # And it comes out again: revert leaves the real file as it was.
    assert patch("revert", "--root", str(real_host), "04", "05") == 0
    assert (real_host / EXECUTOR).read_bytes() == REAL_EXECUTOR.read_bytes()
