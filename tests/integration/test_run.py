"""`jr-checkpoint run -- COMMAND`: real processes, no database (install() connects lazily)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jr_checkpoint import launcher

JR_CHECKPOINT = [sys.executable, "-m", "jr_checkpoint"]

# What the child sees: the hook installed, the marker and DSN it was given, its own pid.
REPORT = ("import json, os, sys, jr_checkpoint; print(json.dumps({'installed': jr_checkpoint.installed(), "
          "'marker': os.environ.get('JR_CHECKPOINT_RUN'), 'dsn': os.environ.get('JR_CHECKPOINT_DSN'), "
          "'pid': os.getpid(), 'other': os.environ.get('OTHER_SITECUSTOMIZE')}))")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH (so nothing but the bootstrap decides what imports)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(extra)
    return env


def jr_run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*JR_CHECKPOINT, "run", *argv], capture_output=True, text=True,
                          timeout=60, env=env if env is not None else clean_env())


def test_the_command_runs_with_jr_checkpoint_installed():
    done = jr_run("--", sys.executable, "-c", REPORT)
    assert (done.returncode, done.stderr) == (0, "")
    report = json.loads(done.stdout)
    assert report["installed"] is True and report["marker"] == "1" and report["dsn"] is None


def test_a_plain_python_has_no_hook():
    """The control: the same code without `jr-checkpoint run`."""
    done = subprocess.run([sys.executable, "-c", REPORT], capture_output=True, text=True,
                          timeout=60, env=clean_env())
    assert json.loads(done.stdout)["installed"] is False


def test_dsn_option_reaches_the_command_and_an_inherited_one_is_kept():
    done = jr_run("--dsn", "dbname=jobs host=db1", "--", sys.executable, "-c", REPORT)
    assert json.loads(done.stdout)["dsn"] == "dbname=jobs host=db1"
    done = jr_run("--", sys.executable, "-c", REPORT, env=clean_env(JR_CHECKPOINT_DSN="dbname=mine"))
    assert json.loads(done.stdout)["dsn"] == "dbname=mine"


def test_the_exit_status_is_the_commands():
    assert jr_run("--", sys.executable, "-c", "raise SystemExit(7)").returncode == 7
    assert jr_run("--", "sh", "-c", "exit 3").returncode == 3  # not a Python: still exec'd


def test_a_signal_reaches_the_command_which_is_the_same_process():
    code = "import os, sys, time; print(os.getpid(), flush=True); time.sleep(60)"
    with subprocess.Popen([*JR_CHECKPOINT, "run", "--", sys.executable, "-c", code],
                          stdout=subprocess.PIPE, text=True, env=clean_env()) as proc:
        try:
            ready = proc.stdout.readline()  # the handshake: the command is running
            assert int(ready) == proc.pid  # exec: the command is the process we started
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == -signal.SIGTERM
        finally:
            proc.kill()


def test_a_sitecustomize_already_on_the_path_still_runs(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['OTHER_SITECUSTOMIZE'] = 'ran'\n")
    done = jr_run("--", sys.executable, "-c", REPORT, env=clean_env(PYTHONPATH=str(other)))
    assert done.stderr == ""
    report = json.loads(done.stdout)
    assert report["other"] == "ran" and report["installed"] is True


def test_a_failing_sitecustomize_on_the_path_is_one_line_and_the_command_runs(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    # Broken only under `run` (jr-checkpoint's own Python, before the exec, imports it too).
    (other / "sitecustomize.py").write_text("import os\nif os.environ.get('JR_CHECKPOINT_RUN'):\n"
                                            "    raise RuntimeError('broken hook')\n")
    done = jr_run("--", sys.executable, "-c", REPORT, env=clean_env(PYTHONPATH=str(other)))
    assert done.returncode == 0 and json.loads(done.stdout)["installed"] is True
    assert done.stderr == (f"jr-checkpoint run: the other sitecustomize ({other / 'sitecustomize.py'}) "
                           "failed: RuntimeError: broken hook\n")


def test_an_install_that_fails_is_one_line_and_the_command_does_not_run(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    # The chained sitecustomize runs first: it breaks install() for this process only.
    (other / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('JR_CHECKPOINT_RUN'):\n    import jr_checkpoint\n"
        "    def install(*args, **kwargs):\n        raise RuntimeError('no hooks today')\n"
        "    jr_checkpoint.install = install\n")
    env = clean_env(PYTHONPATH=str(other))
    done = jr_run("--", sys.executable, "-c", REPORT, env=env)
    assert (done.returncode, done.stdout) == (launcher.UNCHECKED_EXIT, "")
    assert done.stderr == ("jr-checkpoint run: jr_checkpoint.install() failed in this Python "
                           f"({sys.executable}): "
                           "RuntimeError: no hooks today; not running it without checkpoints: install "
                           "jr-checkpoint in that environment (pip install jr_checkpoint-*.whl), or pass "
                           "--allow-unchecked\n")
    done = jr_run("--allow-unchecked", "--", sys.executable, "-c", REPORT, env=env)
    assert done.returncode == 0 and json.loads(done.stdout)["installed"] is False
    assert done.stderr == ("jr-checkpoint run: jr_checkpoint.install() failed in this Python "
                           f"({sys.executable}): "
                           "RuntimeError: no hooks today; running without checkpoints\n")


def test_the_bootstrap_goes_first_on_pythonpath_once():
    path = f"/a{os.pathsep}{launcher.BOOTSTRAP_DIR}{os.pathsep}/b"
    env = launcher.command_env(environ={"PYTHONPATH": path})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(launcher.BOOTSTRAP_DIR), "/a", "/b"]
    assert (launcher.BOOTSTRAP_DIR / "sitecustomize.py").is_file()


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A Python that cannot import jr_checkpoint: a new venv without it (nor pip)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


def test_a_python_without_jr_checkpoint_does_not_start_the_command(bare_python, tmp_path):
    ran = tmp_path / "ran"
    done = jr_run("--", str(bare_python), "-c", f"open({str(ran)!r}, 'w').close()")
    assert (done.returncode, done.stdout, ran.exists()) == (launcher.UNCHECKED_EXIT, "", False)
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"jr-checkpoint run: this Python ({bare_python}) cannot import jr_checkpoint: "
                           "ModuleNotFoundError: ")
    assert line.endswith("; not running it without checkpoints: install jr-checkpoint in that environment "
                         "(pip install jr_checkpoint-*.whl), or pass --allow-unchecked")


def test_with_allow_unchecked_a_python_without_jr_checkpoint_says_so_in_one_line_and_runs(bare_python):
    done = jr_run("--allow-unchecked", "--", str(bare_python), "-c", "print('ran')")
    assert (done.returncode, done.stdout) == (0, "ran\n")
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"jr-checkpoint run: this Python ({bare_python}) cannot import jr_checkpoint: ")
    assert line.endswith("; running without checkpoints")


def test_a_python_that_the_worker_starts_is_not_stopped_by_the_check(bare_python):
    """The check is the worker's: a bash step's other interpreter gets the line and runs."""
    code = (f"import subprocess; print(subprocess.run([{str(bare_python)!r}, '-c', 'print(1)'], "
            "capture_output=True, text=True).returncode)")
    done = jr_run("--", sys.executable, "-c", code)
    assert (done.returncode, done.stdout, done.stderr) == (0, "0\n", "")


def test_a_flag_that_skips_the_bootstrap_is_refused_in_one_line():
    for flag in ("-I", "-E", "-S", "-uE"):
        done = jr_run("--", sys.executable, flag, "-c", "print('ran')")
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.splitlines() == [
            f"jr-checkpoint: error: run: {sys.executable} {'-E' if flag == '-uE' else flag} would skip "
            "jr-checkpoint's start-up hook and run without checkpoints: drop that flag, or pass "
            "--allow-unchecked"]
    done = jr_run("--allow-unchecked", "--", sys.executable, "-S", "-c", "print('ran')")
    assert (done.returncode, done.stdout) == (0, "ran\n")
    assert launcher.skipped_bootstrap([sys.executable, "-u", "worker.py", "-E"]) is None  # the worker's own


def test_no_command_is_one_line_and_exit_2():
    for argv in ((), ("--",), ("--dsn", "dbname=x")):
        done = jr_run(*argv)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == ("jr-checkpoint: error: run: no COMMAND given: "
                               "jr-checkpoint run [--dsn DSN] [--wait SECONDS] "
                               "[--on-task-finished MODULE:FUNCTION] [--allow-unchecked] "
                               "-- COMMAND [ARGS...]\n")


def test_a_command_not_found_is_one_line_and_exit_127(tmp_path):
    done = jr_run("--", "no-such-command-jr")
    assert (done.returncode, done.stderr) == (127, "jr-checkpoint: error: run: command not found: "
                                                   "no-such-command-jr\n")
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    done = jr_run("--", str(text))
    assert done.returncode == 126 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"jr-checkpoint: error: run: cannot run {text}: ")
