"""No password in any output: against real servers, and through the command line.

A wrong password needs a server that checks passwords; the embedded PostgreSQL trusts its
socket, so a real PgBouncer in front of it checks one (md5) for a role of this module's own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest

from jr_checkpoint.dsn import resolve
from jr_checkpoint.errors import DatabaseUnavailable
from tests.conftest import PgBouncer, query
from tests.leaks import PASSWORD, assert_no_password, everything_shown

ROOT = Path(__file__).resolve().parents[2]
RIGHT_PASSWORD = "right-pw-1"


@pytest.fixture(scope="module")
def checked(pg_admin_dsn):
    """A role of our own, and a PgBouncer that lets it in only with RIGHT_PASSWORD."""
    role = f"jr_pw_{uuid.uuid4().hex[:8]}"
    query(pg_admin_dsn, f'CREATE ROLE "{role}" LOGIN')
    bouncer = PgBouncer(pg_admin_dsn, "session", passwords={role: RIGHT_PASSWORD}).start()
    try:
        yield psycopg2.extensions.make_dsn(bouncer.via(pg_admin_dsn), user=role)
    finally:
        bouncer.stop()
        query(pg_admin_dsn, f'DROP ROLE "{role}"')


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nobody listens there once the probe is closed


def test_the_right_password_gets_in(checked):
    with resolve(psycopg2.extensions.make_dsn(checked, password=RIGHT_PASSWORD)).connect() as conn:
        assert conn.closed == 0


@pytest.mark.parametrize("form", ["keywords", "uri"])
def test_a_wrong_password_keeps_the_password_out_of_the_whole_chain(checked, form):
    wrong = psycopg2.extensions.make_dsn(checked, password=PASSWORD)
    if form == "uri":
        p = psycopg2.extensions.parse_dsn(wrong)
        wrong = f"postgresql://{p['user']}:{quote(PASSWORD, safe='')}@{p['host']}:{p['port']}/{p['dbname']}"
    with pytest.raises(DatabaseUnavailable) as info:
        resolve(wrong).connect()
    assert "password authentication failed" in str(info.value)
    assert_no_password(everything_shown(info.value))


def run_check(dsn: str | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    args = ["--dsn", dsn] if dsn is not None else []
    return subprocess.run([sys.executable, "-m", "jr_checkpoint", "migrate", "--check", *args],
                          capture_output=True, text=True, encoding="utf-8", timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})})


def cli_cases(checked: str) -> list[tuple[str, str]]:
    return [
        (f"postgresql://u:{PASSWORD}@127.0.0.1:1/ledger", "invalid percent-encoded token"),
        (f"host=127.0.0.1 port=1 dbname=ledger password='{PASSWORD}", "unterminated quoted string"),
        (f"host=127.0.0.1 port=1 dbname=ledger password={PASSWORD} bogus=1",
         'invalid connection option'),
        (f"postgresql://u:{quote(PASSWORD, safe='')}@127.0.0.1:{closed_port()}/ledger", "Connection refused"),
        (psycopg2.extensions.make_dsn(checked, password=PASSWORD), "password authentication failed"),
    ]


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("via", ["--dsn", "JR_CHECKPOINT_DSN"])
def test_migrate_check_never_prints_the_password(checked, case, via):
    dsn, reason = cli_cases(checked)[case]
    result = run_check(dsn) if via == "--dsn" else run_check(None, {"JR_CHECKPOINT_DSN": dsn})
    assert result.returncode == 2
    # nothing, or the line that names the target (a DSN that parses), never the password
    assert result.stdout == "" or (len(result.stdout.splitlines()) == 1
                                   and result.stdout.startswith("[Checkpoint Migration] Target: "))
    assert PASSWORD not in result.stdout and quote(PASSWORD, safe="") not in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("jr-checkpoint: error: ")
    assert reason in line
    assert_no_password(result.stdout + result.stderr)
