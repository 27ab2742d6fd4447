"""`jr-checkpoint demo` then `jr-checkpoint serve`, with nothing configured: the new user's path.

Both use the embedded PostgreSQL in one data directory; serve shows the demo's task, and
Ctrl-C stops the dashboard and the embedded server with it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("waitress", reason="serve needs the 'web' extra")  # in 'dev' too


@pytest.fixture
def data_dir():
    """Outside pytest's basetemp, which a concurrent pytest run may prune (see conftest)."""
    directory = Path(tempfile.mkdtemp(prefix="jr-checkpoint-serve-"))
    yield directory / "pgdata"
    shutil.rmtree(directory, ignore_errors=True)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "jr_checkpoint", *args]


def test_demo_then_serve_shows_the_demo_task_and_ctrl_c_stops_both(data_dir):
    demo = subprocess.run(command("demo", "--data-dir", str(data_dir)), capture_output=True,
                          text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    server = subprocess.Popen(command("serve", "--data-dir", str(data_dir), "--port", "0"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        assert first == f"database: the demo's embedded PostgreSQL in {data_dir}\n", server.stderr.read()
        address = re.fullmatch(r"serving the dashboard on (http://127\.0\.0\.1:\d+/) \(Ctrl-C to stop\)\n",
                               server.stdout.readline()).group(1)
        with urllib.request.urlopen(address + "api/tasks", timeout=30) as response:
            tasks = json.load(response)["tasks"]
        assert [(t["task_id"], t["state"], t["steps_done"], t["total_steps"]) for t in tasks] == [
            (-1, "finished", 6, 6)]
        with urllib.request.urlopen(address + "tasks/-1", timeout=30) as response:
            page = response.read().decode()
        assert page.count('data-result="success"') == 6
        assert (data_dir / "postmaster.pid").exists()  # the embedded server runs while serve does
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
        assert server.stdout.read() == "stopped\n"
        assert not (data_dir / "postmaster.pid").exists()  # and stopped with it
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
