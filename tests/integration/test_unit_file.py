"""The host's real unit file, with the ExecStart docs/host.md gives, run as a non-root user.

The unit is `scripts/systemd/jr-se.service` of dereadi/ganuda_ai (a copy in tests/data/ganuda_ai),
its paths mapped into a temporary directory: /home/dereadi/cherokee_venv is a fresh venv into
which the wheel built from this checkout is installed with pip (its dependencies come from this
test run's environment, through a .pth file), /ganuda is a copy of the host stand-in. The worker
runs with exactly the unit's User (a non-root one here), WorkingDirectory, PATH and PYTHONPATH,
plus the host's database settings (what /ganuda/config/secrets.env holds on the host).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from jr_checkpoint import launcher
from tests.conftest import HOST_ROOT, host_env, query

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "data" / "ganuda_ai" / "scripts" / "systemd" / "jr-se.service"
HOST_DOC = ROOT / "docs" / "host.md"
VENV, GANUDA = "/home/dereadi/cherokee_venv", "/ganuda"
JR = "Software Engineer Jr."

# A file step (checkpointed), then a bash step that shows what the worker's children see: a
# module of the unit's PYTHONPATH, and jr-checkpoint installed in the venv's Python.
INSTRUCTION = """# Jr Instruction: notes

Create `app/notes.txt`:

```text
written once
```

```bash
python -c "import sys, unit_lib_probe as m, jr_checkpoint as j; \\
print(m.NAME, j.installed(), j.__file__.startswith(sys.prefix))" > probe.txt
```
"""


def unit_service(text: str) -> dict[str, list[str]]:
    """The [Service] section's settings, each key with its values in order."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def documented_exec_start() -> str:
    """The ExecStart that docs/host.md tells the operator to write into jr-se.service."""
    (line,) = re.findall(r"^ExecStart=(/home/dereadi/cherokee_venv/bin/jr-checkpoint run .*)$",
                         HOST_DOC.read_text(), re.MULTILINE)
    return line


def worker_user(dsn: str) -> pwd.struct_passwd:
    """A real non-root user who can reach the test's server: ourselves when not root, else the
    owner of the embedded server's socket directory (the only one who may enter it)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    host = dict(part.split("=", 1) for part in dsn.split() if "=" in part).get("host", "")
    owner = os.stat(host).st_uid if host.startswith("/") else 0
    user = pwd.getpwuid(owner) if owner else pwd.getpwnam("nobody")
    assert user.pw_uid != 0
    return user


@pytest.fixture(scope="module")
def place():
    """A directory every user may enter, removed at the end."""
    directory = Path(tempfile.mkdtemp(prefix="jr-unit-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _venv(path: Path) -> Path:
    """A venv (no pip) from this Python's base interpreter, or the system's of the same version
    when that one is under a private directory (pyenv in /root)."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    python = system if os.geteuid() == 0 and system.exists() and str(base).startswith("/root") else base
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def cherokee_venv(place) -> Path:
    """/home/dereadi/cherokee_venv: a venv with the wheel of this checkout installed by pip."""
    source, dist = place / "source", place / "dist"  # a copy: the build leaves files behind
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "jr_checkpoint", source / "jr_checkpoint",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # Without PYTHONPATH (which points at this checkout), so pip sees only the venv's packages.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(dist), str(source)],
                   check=True, timeout=120, capture_output=True, env=env)
    (wheel,) = dist.glob("jr_checkpoint-*.whl")
    venv = place / "cherokee_venv"
    python = _venv(venv)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "--quiet", str(wheel)],
                   check=True, timeout=120, capture_output=True, env=env)
    assert (venv / "bin" / "jr-checkpoint").exists(), sorted(p.name for p in (venv / "bin").iterdir())
    with_dependencies(python)
    return venv


def with_dependencies(python: Path) -> None:
    """psycopg2 and wrapt as this run has them, for the venv of ``python``: a path line (the
    .pth files there are not read, so this checkout's editable install does not come along)."""
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    packages = subprocess.run([str(python), "-c", where], check=True, capture_output=True,
                              text=True).stdout.strip()
    (Path(packages) / "jr_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


@pytest.fixture(scope="module")
def bare_venv(place) -> Path:
    """A Python without jr-checkpoint: a fresh venv with the host's dependencies only."""
    venv = place / "bare"
    with_dependencies(_venv(venv))
    return venv


@pytest.fixture
def ganuda(place, dsn):
    """/ganuda: a copy of the host stand-in owned by the worker's user, its queue table, a task."""
    root = Path(tempfile.mkdtemp(prefix="ganuda-", dir=place))
    shutil.copytree(HOST_ROOT, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "lib" / "unit_lib_probe.py").write_text("NAME = 'from /ganuda/lib'\n")
    user = worker_user(dsn)
    for path in [root, *root.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)
    query(dsn, (HOST_ROOT / "jr_executor" / "queue_tasks.sql").read_text())
    ((task_id,),) = query(dsn, "INSERT INTO jr_work_queue (task_id, title, instruction_content, assigned_jr) "
                               "VALUES ('T-1', 'notes', %s, %s) RETURNING id", (INSTRUCTION, JR))
    yield root, task_id, user
    shutil.rmtree(root, ignore_errors=True)


def start_unit(dsn, root: Path, venv: Path, user: pwd.struct_passwd, exec_start: str,
               python: Path | None = None) -> subprocess.CompletedProcess:
    """Run the unit's ExecStart as systemd would: its User, WorkingDirectory and Environment."""
    def mapped(text: str) -> str:
        return text.replace(VENV, str(venv)).replace(GANUDA, str(root))

    service = unit_service(UNIT.read_text())
    assert service["User"] == ["dereadi"] and service["WorkingDirectory"] == ["/ganuda/jr_executor"]
    env = dict(mapped(value).split("=", 1) for value in service["Environment"])
    assert set(env) == {"PATH", "PYTHONPATH"}
    env.update(host_env(dsn, root), HOME=str(root), LANG="C.UTF-8",
               JR_WORKER_DRAIN="1", JR_WORKER_POLL="0.05")
    command = [mapped(arg) for arg in shlex.split(exec_start)]
    if python is not None:
        command[command.index(str(venv / "bin" / "python"))] = str(python)
    return subprocess.run(command, cwd=mapped(service["WorkingDirectory"][0]), env=env, user=user.pw_uid,
                          group=user.pw_gid, extra_groups=[], capture_output=True, text=True, timeout=120)


def task_status(dsn, task_id) -> str:
    return query(dsn, "SELECT status FROM jr_work_queue WHERE id = %s", (task_id,))[0][0]


def test_the_real_unit_with_the_documented_exec_start_checkpoints_as_a_non_root_user(
        dsn, cherokee_venv, ganuda):
    root, task_id, user = ganuda
    before = unit_service(UNIT.read_text())["ExecStart"]
    assert before == [f'{VENV}/bin/python -u jr_queue_worker.py "{JR}"']
    assert documented_exec_start() == f"{VENV}/bin/jr-checkpoint run -- {before[0]}"  # only that changes
    done = start_unit(dsn, root, cherokee_venv, user, documented_exec_start())
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert task_status(dsn, task_id) == "completed", done.stdout
    # The lib module, jr-checkpoint installed, and the wheel's copy of it (not this checkout's).
    assert (root / "probe.txt").read_text() == "from /ganuda/lib True True\n"
    assert (root / "app" / "notes.txt").read_text() == "written once\n"
    assert (root / "probe.txt").stat().st_uid == user.pw_uid != 0
    rows = query(dsn, "SELECT step_number, step_type, execution_result FROM jr_step_rewards "
                      "WHERE task_id = %s ORDER BY 1", (task_id,))
    assert rows == [(0, "file", "success"), (1, "bash", "success")]
    assert "jr-checkpoint run:" not in done.stderr


def test_a_python_without_jr_checkpoint_does_not_start_the_worker(dsn, cherokee_venv, bare_venv, ganuda):
    root, task_id, user = ganuda
    python = bare_venv / "bin" / "python"
    done = start_unit(dsn, root, cherokee_venv, user, documented_exec_start(), python=python)
    assert (done.returncode, done.stdout) == (launcher.UNCHECKED_EXIT, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"jr-checkpoint run: this Python ({python}) cannot import jr_checkpoint: "
                           "ModuleNotFoundError: ")
    assert line.endswith("or pass --allow-unchecked")
    assert task_status(dsn, task_id) == "pending"  # nothing taken, nothing run
    assert not (root / "app" / "notes.txt").exists()

    unchecked = documented_exec_start().replace(" run -- ", " run --allow-unchecked -- ")
    done = start_unit(dsn, root, cherokee_venv, user, unchecked, python=python)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert task_status(dsn, task_id) == "completed"
    assert query(dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'jr_step_rewards'") == [(1,)]
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE task_id = %s", (task_id,)) == [(0,)]
    assert done.stderr.splitlines()[0].endswith("; running without checkpoints")
