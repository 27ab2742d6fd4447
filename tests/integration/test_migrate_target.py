"""`jr-checkpoint migrate` names its target on stdout, first, always; with a host root given or
found, a loader that is missing or fails is an error (exit 2), never another database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import psycopg2.extensions
import pytest

from jr_checkpoint import cli, dsn, embedded, migrate
from tests.conftest import query

ROOT = Path(__file__).resolve().parents[2]
FIRST = "[Checkpoint Migration] Target: "


def names(target_dsn: str) -> str:
    params = psycopg2.extensions.parse_dsn(target_dsn)
    return f"host={params['host']} port={params.get('port', '5432')} dbname={params['dbname']}"


def jr_migrate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != dsn.ENV_DSN}
    environment.update(env or {}, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jr_checkpoint", "migrate", *args], capture_output=True,
                          text=True, env=environment, timeout=60, cwd=ROOT)


def host(tmp_path: Path, body: str) -> Path:
    """A host root whose lib/secrets_loader.py has this get_db_config body."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "secrets_loader.py").write_text(f"def get_db_config():\n    {body}\n")
    return tmp_path


def test_the_first_line_names_the_database_given_with_dsn(empty_dsn):
    done = jr_migrate("--dsn", empty_dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{FIRST}{names(empty_dsn)} (from --dsn)"


def test_and_the_one_from_the_environment(empty_dsn):
    done = jr_migrate("--check", env={dsn.ENV_DSN: empty_dsn})
    assert done.returncode == 1  # no tables yet: --check names the target first all the same
    assert done.stdout.splitlines() == [f"{FIRST}{names(empty_dsn)} (from $JR_CHECKPOINT_DSN)"]


def test_and_the_hosts_found_by_its_secrets_loader(empty_dsn, tmp_path):
    root = host(tmp_path, f"return {psycopg2.extensions.parse_dsn(empty_dsn)!r}")
    done = jr_migrate("--host-root", str(root))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (f"{FIRST}{names(empty_dsn)} (from the host's lib.secrets_loader "
                                           f"at {root.resolve()})")
    assert query(empty_dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'jr_step_rewards'") == [(1,)]


def test_a_host_loader_that_fails_is_an_error_not_a_fallback(tmp_path):
    root = host(tmp_path, "raise RuntimeError('secret CHEROKEE_DB_HOST is not set')")
    done = jr_migrate("--host-root", str(root))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("jr-checkpoint: error: lib.secrets_loader.get_db_config() failed: "
                           "secret CHEROKEE_DB_HOST is not set\n")


def test_a_host_root_without_a_loader_is_an_error(tmp_path):
    done = jr_migrate("--host-root", str(tmp_path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        f"jr-checkpoint: error: host root {tmp_path} (given by --host-root) has no lib.secrets_loader "
        "(lib/secrets_loader.py with get_db_config()): not migrating any other database; pass --dsn, "
        "or --host-root DIR"]


@pytest.fixture
def demo_left_a_database(monkeypatch, empty_dsn):
    """As if the demo had run: its embedded server has data (served here by the test's database)."""
    @contextlib.contextmanager
    def server(data_dir):
        yield dsn.resolve(empty_dsn)

    monkeypatch.setattr(embedded, "has_data", lambda data_dir: True)
    monkeypatch.setattr(embedded, "available", lambda: True)
    monkeypatch.setattr(embedded, "server", server)
    return empty_dsn


def test_with_nothing_configured_and_no_host_it_migrates_the_demos_server_and_says_so(
        no_host, demo_left_a_database, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(migrate, "HOST_ROOTS", (str(tmp_path / "ganuda"),))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["migrate"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"{FIRST}the demo's embedded PostgreSQL in {embedded.default_data_dir()}, NOT a "
                     f"host's database (nothing configured, and no host root at {tmp_path / 'ganuda'})")
    assert query(demo_left_a_database, "SELECT count(*) FROM pg_tables WHERE tablename = 'jr_step_rewards'") \
        == [(1,)]


def test_a_host_root_that_exists_is_never_passed_over_for_the_demos_server(
        no_host, demo_left_a_database, monkeypatch, tmp_path, capsys):
    (tmp_path / "ganuda").mkdir()
    monkeypatch.setattr(migrate, "HOST_ROOTS", (str(tmp_path / "ganuda"),))
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["migrate"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"jr-checkpoint: error: host root {tmp_path / 'ganuda'} (found) has no "
                          "lib.secrets_loader")
    assert query(demo_left_a_database, "SELECT count(*) FROM pg_tables WHERE tablename = 'jr_step_rewards'") \
        == [(0,)]
