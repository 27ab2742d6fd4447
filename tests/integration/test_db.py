"""The database boundary on a real server: schema.py and reports.py translate through db."""

from __future__ import annotations

import pytest

from jr_checkpoint import cli, db, reports, schema
from jr_checkpoint.dsn import resolve
from jr_checkpoint.errors import DatabaseUnavailable, SchemaMissing, StoreError
from tests.conftest import query
from tests.waiting import wait_until


def test_reports_on_a_database_without_the_tables_say_run_migrate(empty_dsn, capsys):
    target = resolve(empty_dsn)
    with pytest.raises(SchemaMissing) as info:
        reports.stats(target)
    assert str(info.value) == (f"the checkpoint tables do not exist at {target.describe()}: "
                               "run `jr-checkpoint migrate`")
    assert cli.main(["stats", "--dsn", empty_dsn]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"jr-checkpoint: error: {info.value}\n")


def test_a_failing_statement_is_a_store_error_naming_the_action(dsn):
    target = resolve(dsn)
    with pytest.raises(StoreError) as info, db.cursor(target) as cur:
        cur.execute("SELECT 1 / 0")
    assert str(info.value) == f"query failed at {target.describe()}: division by zero"
    assert type(info.value).__name__ == "StoreError"
    assert type(info.value.__cause__).__name__ == "DivisionByZero"  # the type stays, for a reader


def test_a_migration_error_keeps_its_message(empty_dsn):
    query(empty_dsn, "CREATE VIEW jr_task_checkpoints AS SELECT 1 AS task_id")
    target = resolve(empty_dsn)
    with pytest.raises(StoreError, match=f'^migration failed at {target.describe()}: '
                                         'cannot create index on relation "jr_task_checkpoints"$'):
        schema.create_tables(target)


def wait_until_gone(dsn: str, pid: int, timeout: float = 10) -> None:
    """A handshake with the server: the terminated backend has really exited."""
    wait_until(lambda: not query(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
               timeout, f"backend {pid} to exit")


def test_a_connection_the_server_dropped_is_database_unavailable(dsn):
    target = resolve(dsn)
    with pytest.raises(DatabaseUnavailable) as info, db.cursor(target) as cur:
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
        assert query(dsn, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
        wait_until_gone(dsn, pid)
        cur.execute("SELECT 1")
    assert str(info.value).startswith(f"lost the connection to PostgreSQL at {target.describe()}: ")


def test_connect_sets_autocommit(dsn):
    conn = db.connect(resolve(dsn), 1, autocommit=True)
    try:
        assert conn.autocommit is True
    finally:
        conn.close()
