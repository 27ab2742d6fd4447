"""`jr-checkpoint migrate` and scripts/create_checkpoint_tables.py on a real PostgreSQL."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2.extensions
import pytest

from jr_checkpoint import cli
from jr_checkpoint.dsn import resolve
from jr_checkpoint.errors import DatabaseUnavailable
from jr_checkpoint.store import CheckpointStore
from tests.conftest import query
from tests.seed_text import seed_ddl

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "create_checkpoint_tables.py"
TABLES = ("jr_step_rewards", "jr_task_checkpoints")
ALL = "jr_step_rewards, jr_task_checkpoints, jr_task_attempts"

CREATED = [
    f"[Checkpoint Migration] Tables created: {ALL}",
    "[Checkpoint Migration] jr_step_rewards: 0 rows",
    "[Checkpoint Migration] jr_task_checkpoints: 0 rows",
    "[Checkpoint Migration] jr_task_attempts: 0 rows",
    "[Checkpoint Migration] Done — For Seven Generations",
]

# The seed's Step 1, verbatim from the seed: the reference the migration must reproduce.
SEED_DDL = seed_ddl()


def after_target(lines: list[str]) -> list[str]:
    """The lines after the first, which names the target (tests/integration/test_migrate_target.py)."""
    if lines and lines[0].startswith("[Checkpoint Migration] Target: "):
        return lines[1:]
    return lines


def run_cli(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = cli.main(["migrate", *args])
    out, err = capsys.readouterr()
    return code, after_target(out.splitlines()), err.splitlines()


def run_python(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, encoding="utf-8",
                          env=environment, timeout=timeout, cwd=ROOT)


def existing_tables(dsn: str) -> list[str]:
    rows = query(dsn, "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r' "
                      "ORDER BY relname", (list(TABLES),))
    return [name for (name,) in rows]


# -- create ------------------------------------------------------------------------------------


def test_migrate_twice_prints_the_seeds_lines_and_keeps_the_data(empty_dsn, capsys):
    assert run_cli(capsys, "--dsn", empty_dsn) == (0, CREATED, [])
    assert existing_tables(empty_dsn) == list(TABLES)
    query(empty_dsn, "INSERT INTO jr_step_rewards (task_id, step_number) VALUES (1, 0), (1, 1)")
    code, out, err = run_cli(capsys, "--dsn", empty_dsn)
    assert (code, err) == (0, [])
    # The second time it says so, instead of "Tables created".
    assert out == [f"[Checkpoint Migration] Tables already present: {ALL}",
                   "[Checkpoint Migration] jr_step_rewards: 2 rows",
                   "[Checkpoint Migration] jr_task_checkpoints: 0 rows",
                   "[Checkpoint Migration] jr_task_attempts: 0 rows", CREATED[4]]


def test_migrate_names_the_one_table_it_created(empty_dsn, capsys):
    query(empty_dsn, "CREATE TABLE jr_task_checkpoints (id SERIAL PRIMARY KEY, task_id INTEGER NOT NULL "
                     "UNIQUE, last_completed_step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER, "
                     "checkpoint_data JSONB, created_at TIMESTAMP DEFAULT NOW(), "
                     "updated_at TIMESTAMP DEFAULT NOW())")
    code, out, _ = run_cli(capsys, "--dsn", empty_dsn)
    assert code == 0
    assert out[:2] == ["[Checkpoint Migration] Tables created: jr_step_rewards, jr_task_attempts",
                       "[Checkpoint Migration] Tables already present: jr_task_checkpoints"]


def test_the_script_prints_the_same(empty_dsn):
    result = run_python(str(SCRIPT), "--dsn", empty_dsn)
    assert (result.returncode, result.stderr) == (0, "")
    assert after_target(result.stdout.splitlines()) == CREATED
    assert existing_tables(empty_dsn) == list(TABLES)


def test_python_dash_m_and_the_environment_variable(empty_dsn):
    result = run_python("-m", "jr_checkpoint", "migrate", env={"JR_CHECKPOINT_DSN": empty_dsn})
    assert (result.returncode, result.stderr) == (0, "")
    assert after_target(result.stdout.splitlines()) == CREATED


def test_the_script_finds_the_hosts_secrets_loader_with_host_root(empty_dsn, tmp_path):
    params = psycopg2.extensions.parse_dsn(empty_dsn)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "secrets_loader.py").write_text(
        f"def get_db_config():\n    return {params!r}\n")
    result = run_python(str(SCRIPT), "--host-root", str(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")
    assert after_target(result.stdout.splitlines()) == CREATED
    assert existing_tables(empty_dsn) == list(TABLES)


# Every child imports first, then waits for the same instant, so the four really overlap.
CONCURRENT_CHILD = """
import sys, time
from jr_checkpoint.cli import main
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
sys.exit(main(["migrate", "--dsn", sys.argv[2]]))
"""


def test_four_migrations_at_once_all_succeed_and_one_says_it_created_the_tables(empty_dsn):
    start = time.time() + 1.5
    children = [subprocess.Popen([sys.executable, "-c", CONCURRENT_CHILD, str(start), empty_dsn],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 encoding="utf-8", env={**os.environ, "PYTHONIOENCODING": "utf-8"})
                for _ in range(4)]
    results = [(child.wait(timeout=60), *child.communicate()) for child in children]
    assert [(code, err) for code, _, err in results] == [(0, "")] * 4
    # Serialized by the migration lock: exactly one created the tables, the others found them.
    outputs = sorted(after_target(out.splitlines())[0] for _, out, _ in results)
    assert outputs == [
        f"[Checkpoint Migration] Tables already present: {ALL}"] * 3 + [
        CREATED[0]]
    assert existing_tables(empty_dsn) == list(TABLES)


# -- the created schema is the seed's ------------------------------------------------------------


def catalog(dsn: str, namespace: str) -> dict:
    """Columns, constraints and indexes of the two tables in ``namespace``, names made schema-free."""
    prefix = f"{namespace}."

    def strip(value):
        return value.replace(prefix, "") if isinstance(value, str) else value

    columns = query(dsn, """
        SELECT table_name, column_name, data_type, character_maximum_length, column_default, is_nullable
        FROM information_schema.columns
        WHERE table_schema = %s AND table_name = ANY(%s)
        ORDER BY table_name, ordinal_position""", (namespace, list(TABLES)))
    constraints = query(dsn, """
        SELECT cl.relname, co.conname, co.contype::text,
               array_agg(a.attname::text ORDER BY k.ord)
        FROM pg_constraint co
        JOIN pg_class cl ON cl.oid = co.conrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        CROSS JOIN LATERAL unnest(co.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.attnum
        WHERE n.nspname = %s AND cl.relname = ANY(%s) AND co.contype IN ('p', 'u')
        GROUP BY cl.relname, co.conname, co.contype
        ORDER BY 1, 2""", (namespace, list(TABLES)))
    indexes = query(dsn, """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = %s AND tablename = ANY(%s) ORDER BY 1, 2""", (namespace, list(TABLES)))
    return {
        "columns": [tuple(strip(v) for v in row) for row in columns],
        "constraints": [tuple(row) for row in constraints],
        "indexes": [tuple(strip(v) for v in row) for row in indexes],
    }


EXPECTED_COLUMNS = [
    ("jr_step_rewards", "id", "integer", None, "nextval('jr_step_rewards_id_seq'::regclass)", "NO"),
    ("jr_step_rewards", "task_id", "integer", None, None, "NO"),
    ("jr_step_rewards", "step_number", "integer", None, None, "NO"),
    ("jr_step_rewards", "step_type", "character varying", 50, None, "YES"),
    ("jr_step_rewards", "target_file", "text", None, None, "YES"),
    ("jr_step_rewards", "step_content_hash", "character varying", 64, None, "YES"),
    ("jr_step_rewards", "execution_result", "character varying", 20, "'pending'::character varying", "NO"),
    ("jr_step_rewards", "execution_time_ms", "integer", None, None, "YES"),
    ("jr_step_rewards", "error_detail", "text", None, None, "YES"),
    ("jr_step_rewards", "created_at", "timestamp without time zone", None, "now()", "YES"),
    ("jr_step_rewards", "updated_at", "timestamp without time zone", None, "now()", "YES"),
    ("jr_task_checkpoints", "id", "integer", None, "nextval('jr_task_checkpoints_id_seq'::regclass)", "NO"),
    ("jr_task_checkpoints", "task_id", "integer", None, None, "NO"),
    ("jr_task_checkpoints", "last_completed_step", "integer", None, "0", "NO"),
    ("jr_task_checkpoints", "total_steps", "integer", None, None, "YES"),
    ("jr_task_checkpoints", "checkpoint_data", "jsonb", None, None, "YES"),
    ("jr_task_checkpoints", "created_at", "timestamp without time zone", None, "now()", "YES"),
    ("jr_task_checkpoints", "updated_at", "timestamp without time zone", None, "now()", "YES"),
]

EXPECTED_CONSTRAINTS = [
    ("jr_step_rewards", "jr_step_rewards_pkey", "p", ["id"]),
    ("jr_step_rewards", "jr_step_rewards_task_id_step_number_key", "u", ["task_id", "step_number"]),
    ("jr_task_checkpoints", "jr_task_checkpoints_pkey", "p", ["id"]),
    ("jr_task_checkpoints", "jr_task_checkpoints_task_id_key", "u", ["task_id"]),
]

SEED_INDEXES = [
    ("jr_step_rewards", "idx_step_rewards_result",
     "CREATE INDEX idx_step_rewards_result ON jr_step_rewards USING btree (execution_result)"),
    ("jr_step_rewards", "idx_step_rewards_task",
     "CREATE INDEX idx_step_rewards_task ON jr_step_rewards USING btree (task_id)"),
    ("jr_task_checkpoints", "idx_checkpoints_task",
     "CREATE INDEX idx_checkpoints_task ON jr_task_checkpoints USING btree (task_id)"),
]


# Indexes the package adds to the seed's tables (columns and constraints stay the seed's).
ADDED_INDEXES = [
    ("jr_step_rewards", "idx_step_rewards_activity",
     "CREATE INDEX idx_step_rewards_activity ON jr_step_rewards USING btree (updated_at, task_id)"
     " INCLUDE (step_type, execution_time_ms)"),
    ("jr_step_rewards", "idx_step_rewards_duration",
     "CREATE INDEX idx_step_rewards_duration ON jr_step_rewards USING btree"
     ' (execution_time_ms, step_type COLLATE "C")'),
    ("jr_step_rewards", "idx_step_rewards_file",
     "CREATE INDEX idx_step_rewards_file ON jr_step_rewards USING btree"
     ' (step_type COLLATE "C", hashtext(COALESCE(target_file, \'\'::text)))'),
    ("jr_step_rewards", "idx_step_rewards_rerun",
     "CREATE INDEX idx_step_rewards_rerun ON jr_step_rewards USING btree (step_type, updated_at)"
     " INCLUDE (target_file) WHERE ((updated_at > created_at)"
     " AND ((execution_result)::text = 'success'::text)"
     " AND (COALESCE(octet_length(target_file), 0) <= 1000))"),
    ("jr_step_rewards", "idx_step_rewards_rerun_long",
     "CREATE INDEX idx_step_rewards_rerun_long ON jr_step_rewards USING btree (step_type, updated_at)"
     " WHERE ((updated_at > created_at) AND ((execution_result)::text = 'success'::text)"
     " AND (octet_length(target_file) > 1000))"),
]


def test_created_tables_match_the_seed_exactly(empty_dsn, capsys):
    assert cli.main(["migrate", "--dsn", empty_dsn]) == 0
    # The seed's own DDL, run in a schema of its own in the same database, is the reference.
    query(empty_dsn, "CREATE SCHEMA seed; SET search_path TO seed; " + SEED_DDL)
    created, seed = catalog(empty_dsn, "public"), catalog(empty_dsn, "seed")
    added = [row for row in created["indexes"] if row in ADDED_INDEXES]
    assert added == ADDED_INDEXES
    created["indexes"] = [row for row in created["indexes"] if row not in ADDED_INDEXES]
    assert created == seed
    assert created["columns"] == EXPECTED_COLUMNS
    assert created["constraints"] == EXPECTED_CONSTRAINTS
    assert [row for row in created["indexes"] if row[1].startswith("idx_")] == SEED_INDEXES
    assert {row[1] for row in created["indexes"]} == {name for _, name, _ in SEED_INDEXES} | {
        name for _, name, _, _ in EXPECTED_CONSTRAINTS}


def test_migrate_replaces_the_indexes_of_earlier_versions(dsn, capsys):
    """A ledger migrated by an earlier version: its dashboard indexes go, the current ones come."""
    earlier = {
        "idx_step_rewards_updated": "(updated_at, task_id)",
        "idx_step_rewards_window": "(updated_at, task_id) INCLUDE (step_type, execution_result, "
                                   "execution_time_ms, created_at)",
        "idx_step_rewards_time": "(execution_time_ms)",
    }
    for _, name, _ in ADDED_INDEXES:
        query(dsn, f"DROP INDEX {name}")
    for name, columns in earlier.items():
        query(dsn, f"CREATE INDEX {name} ON jr_step_rewards {columns}")
    assert cli.main(["migrate", "--dsn", dsn]) == 0
    indexes = catalog(dsn, "public")["indexes"]
    assert [row for row in indexes if row in ADDED_INDEXES] == ADDED_INDEXES
    assert not {name for _, name, _ in indexes} & set(earlier)


# -- --check -------------------------------------------------------------------------------------


def test_check_on_the_created_schema(dsn, capsys):
    target = resolve(dsn).describe()
    assert target.endswith(" dbname=" + psycopg2.extensions.parse_dsn(dsn)["dbname"])
    assert run_cli(capsys, "--check", "--dsn", dsn) == (0, [
        f"[Checkpoint Migration] Schema OK: {ALL} at {target}"], [])


def test_check_on_an_empty_database_names_both_tables(empty_dsn, capsys):
    assert run_cli(capsys, "--check", "--dsn", empty_dsn) == (1, [], [
        "[Checkpoint Migration] table jr_step_rewards is missing",
        "[Checkpoint Migration] table jr_task_checkpoints is missing",
        "[Checkpoint Migration] table jr_task_attempts is missing",
    ])
    assert existing_tables(empty_dsn) == []  # --check creates nothing


def test_check_names_a_missing_column(dsn, capsys):
    query(dsn, "ALTER TABLE jr_step_rewards DROP COLUMN error_detail")
    assert run_cli(capsys, "--check", "--dsn", dsn) == (1, [], [
        "[Checkpoint Migration] column jr_step_rewards.error_detail is missing"])


def test_check_names_a_wrong_type_and_a_missing_table(dsn, capsys):
    query(dsn, "ALTER TABLE jr_step_rewards ALTER COLUMN step_type TYPE VARCHAR(100), "
               "ALTER COLUMN execution_time_ms TYPE BIGINT; DROP TABLE jr_task_checkpoints")
    # A wider column is harmless: said on stdout. Narrower ones: tests/integration/test_live_shape.py.
    assert run_cli(capsys, "--check", "--dsn", dsn) == (1, [
        "[Checkpoint Migration] column jr_step_rewards.step_type is character varying(100), "
        "the seed's character varying(50): wider, harmless"], [
        "[Checkpoint Migration] column jr_step_rewards.execution_time_ms is bigint, expected integer",
        "[Checkpoint Migration] table jr_task_checkpoints is missing",
    ])


# -- --drop --------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_drop_without_yes_and_no_terminal_refuses(dsn, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # a pipe saying yes is not a person
    code, out, err = run_cli(capsys, "--drop", "--dsn", dsn)
    assert (code, out) == (2, [])
    assert len(err) == 1
    assert err[0].startswith("jr-checkpoint: error: Drop jr_step_rewards, jr_task_checkpoints and "
                             "jr_task_attempts at host=")
    assert err[0].endswith("? Refusing without --yes (stdin is not a terminal).")
    assert existing_tables(dsn) == list(TABLES)


def test_drop_asks_on_a_terminal_and_no_keeps_the_tables(dsn, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, out, err = run_cli(capsys, "--drop", "--dsn", dsn)
    assert (code, err) == (1, [])
    assert out[-1].endswith("[y/N] [Checkpoint Migration] Nothing dropped.")
    assert existing_tables(dsn) == list(TABLES)


def test_drop_yes_drops_both_tables(dsn, capsys):
    query(dsn, "INSERT INTO jr_task_checkpoints (task_id) VALUES (1)")
    assert run_cli(capsys, "--drop", "--yes", "--dsn", dsn) == (0, [
        f"[Checkpoint Migration] Tables dropped: {ALL}"], [])
    assert existing_tables(dsn) == []
    assert run_cli(capsys, "--drop", "--yes", "--dsn", dsn)[0] == 0  # nothing left: still fine
    assert run_cli(capsys, "--check", "--dsn", dsn)[0] == 1


def test_drop_answered_yes_on_a_terminal(dsn, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    assert run_cli(capsys, "--drop", "--dsn", dsn)[0] == 0
    assert existing_tables(dsn) == []


# -- a bad target: one line, exit 2, never the password ------------------------------------------


def bad_targets(pg_admin_dsn):
    admin = psycopg2.extensions.parse_dsn(pg_admin_dsn)
    host, port = admin.get("host", "local socket"), admin.get("port", "5432")
    return [
        ("host=127.0.0.1 port=1 dbname=jr user=jr password=secret",
         "host=127.0.0.1 port=1 dbname=jr", "Connection refused"),
        (psycopg2.extensions.make_dsn(pg_admin_dsn, dbname="jr_no_such_database", password="secret"),
         f"host={host} port={port} dbname=jr_no_such_database",
         'database "jr_no_such_database" does not exist'),
        (psycopg2.extensions.make_dsn(pg_admin_dsn, user="jr_no_such_role", password="secret"),
         f"host={host} port={port} dbname=", 'role "jr_no_such_role" does not exist'),
        ("host=127.0.0.1 port=1 password=my secret", "invalid DSN from argument", 'missing "="'),
    ]


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("mode", [[], ["--check"], ["--drop", "--yes"]])
def test_a_bad_target_is_one_line_on_stderr_and_exit_2(pg_admin_dsn, case, mode):
    dsn, names, reason = bad_targets(pg_admin_dsn)[case]
    result = run_python("-m", "jr_checkpoint", "migrate", *mode, "--dsn", dsn)
    # Only the line that names the target (none when the DSN does not parse), never its password.
    assert (result.returncode, after_target(result.stdout.splitlines())) == (2, [])
    assert "secret" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jr-checkpoint: error: ")
    assert names in lines[0]
    assert reason in lines[0]
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr


@pytest.fixture
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for conn in accepted:
        conn.close()


def test_connect_timeout_is_bounded(silent_server, capsys):
    port, accepted = silent_server
    started = time.monotonic()
    code, out, err = run_cli(capsys, "--connect-timeout", "1",
                             "--dsn", f"host=127.0.0.1 port={port} dbname=jr password=secret")
    elapsed = time.monotonic() - started
    assert accepted  # the server really took the connection: it is the silence that times out
    assert (code, out) == (2, [])
    assert err == [f"jr-checkpoint: error: cannot connect to PostgreSQL at host=127.0.0.1 port={port} "
                   f'dbname=jr: connection to server at "127.0.0.1", port {port} failed: timeout expired']
    assert elapsed < 4


def test_store_connect_timeout_is_bounded(silent_server):
    port, _ = silent_server
    store = CheckpointStore(f"host=127.0.0.1 port={port} dbname=jr", connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="timeout expired"):
        store.load_task(1)
    assert time.monotonic() - started < 4


# -- all or nothing ------------------------------------------------------------------------------


def test_a_failing_migration_leaves_nothing_behind(empty_dsn, capsys):
    # A view in jr_task_checkpoints's place: CREATE TABLE IF NOT EXISTS skips it, and the index on
    # it then fails, after jr_step_rewards and its indexes were created in the same transaction.
    query(empty_dsn, "CREATE VIEW jr_task_checkpoints AS SELECT 1 AS task_id")
    code, out, err = run_cli(capsys, "--dsn", empty_dsn)
    target = resolve(empty_dsn).describe()
    assert (code, out) == (2, [])
    assert err == [f"jr-checkpoint: error: migration failed at {target}: "
                   'cannot create index on relation "jr_task_checkpoints"']
    leftovers = query(empty_dsn, "SELECT relname FROM pg_class WHERE relname LIKE 'jr_step_rewards%%' "
                                 "OR relname LIKE 'idx_%%'")
    assert leftovers == []
    query(empty_dsn, "DROP VIEW jr_task_checkpoints")
    assert run_cli(capsys, "--dsn", empty_dsn)[0] == 0


def test_the_previous_releases_functions_are_kept_until_drop_old(dsn, capsys):
    # A database the previous release migrated: its two functions, which its workers call.
    query(dsn, (ROOT / "tests" / "data" / "functions_v1.sql").read_text())
    code, out, err = run_cli(capsys, "--dsn", dsn)
    assert (code, err) == (0, [])
    assert out[-2:] == ["[Checkpoint Migration] The previous release's functions are kept for its workers: "
                        "run `jr-checkpoint migrate --drop-old` once none of them is left", CREATED[-1]]
    assert query(dsn, "SELECT count(*) FROM pg_proc WHERE proname IN "
                      "('jr_checkpoint_begin', 'jr_checkpoint_record_step')") == [(2,)]
    assert run_cli(capsys, "--drop-old", "--dsn", dsn) == (
        0, ["[Checkpoint Migration] The previous release's functions: 2 dropped"], [])
    assert query(dsn, "SELECT count(*) FROM pg_proc WHERE proname IN "
                      "('jr_checkpoint_begin', 'jr_checkpoint_record_step')") == [(0,)]
    assert run_cli(capsys, "--drop-old", "--dsn", dsn) == (
        0, ["[Checkpoint Migration] The previous release's functions: none left"], [])
    code, out, _ = run_cli(capsys, "--dsn", dsn)  # and this release's still work
    assert code == 0 and "kept for its workers" not in "\n".join(out)
