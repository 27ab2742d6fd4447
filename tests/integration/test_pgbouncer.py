"""The `pgbouncer` fixture, and why session state breaks behind transaction pooling.

Through a real PgBouncer: in ``session`` mode a client keeps its server backend, so a SET or an
advisory lock lasts as long as the client's connection; in ``transaction`` mode the backend
goes back to the pool after each transaction, and the next client to come may get it, with
the first client's SET, advisory locks and prepared statements still on it.
"""

from __future__ import annotations

import contextlib

import psycopg2
import psycopg2.extensions
import pytest

from jr_checkpoint import CheckpointStore
from jr_checkpoint.errors import StoreError


def connect(dsn: str, *, autocommit: bool = True):
    conn = psycopg2.connect(dsn, connect_timeout=5)
    conn.autocommit = autocommit
    return contextlib.closing(conn)


def one(conn, sql: str):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_the_fixture_routes_a_dsn_through_pgbouncer_to_the_same_database(pgbouncer, dsn, mode):
    via = pgbouncer(mode)(dsn)
    params = psycopg2.extensions.parse_dsn(via)
    assert (params["host"], params["dbname"]) == ("127.0.0.1", psycopg2.extensions.parse_dsn(dsn)["dbname"])
    with connect(via) as conn:
        assert one(conn, "SELECT current_database()") == params["dbname"]
        assert one(conn, "SELECT count(*) FROM jr_step_rewards") == 0  # the test's own tables
    # PgBouncer's own console, on the same port, says which pool mode it runs.
    with connect(psycopg2.extensions.make_dsn(via, dbname="pgbouncer")) as console:
        with console.cursor() as cur:
            cur.execute("SHOW CONFIG")
            config = {row[0]: row[1] for row in cur.fetchall()}
            cur.execute("SHOW POOLS")
            pools = [row[0] for row in cur.fetchall()]
    assert config["pool_mode"] == mode
    assert params["dbname"] in pools


def test_session_mode_keeps_a_clients_backend_and_its_state(pgbouncer, dsn):
    via = pgbouncer("session")(dsn)
    with connect(via) as a, connect(via) as b, connect(via, autocommit=False) as other:
        pid = one(a, "SELECT pg_backend_pid()")
        one(a, "SELECT set_config('jr.marker', 'client a', false)")
        assert one(a, "SELECT pg_try_advisory_lock(42)") is True
        # Another client, in an open transaction, holds a backend: never client a's.
        assert one(other, "SELECT pg_backend_pid()") != pid
        assert one(a, "SELECT pg_backend_pid()") == pid
        assert one(a, "SELECT current_setting('jr.marker', true)") == "client a"
        assert one(b, "SELECT pg_try_advisory_lock(42)") is False  # the lock excludes client b


def test_transaction_mode_moves_a_client_between_backends_and_leaks_its_state(pgbouncer, dsn):
    via = pgbouncer("transaction")(dsn)
    with connect(via) as a, connect(via, autocommit=False) as other:
        pid = one(a, "SELECT pg_backend_pid()")
        one(a, "SELECT set_config('jr.marker', 'client a', false)")
        assert one(a, "SELECT pg_try_advisory_lock(42)") is True
        # Client a's transaction ended, so its backend went back to the pool, where the other
        # client's transaction finds it, with client a's setting and lock on it...
        assert one(other, "SELECT pg_backend_pid()") == pid
        assert one(other, "SELECT current_setting('jr.marker', true)") == "client a"
        assert one(other, "SELECT pg_try_advisory_lock(42)") is True  # no exclusion at all
        # ...while client a's next statement lands on another backend, without its setting.
        assert one(a, "SELECT pg_backend_pid()") != pid
        assert one(a, "SELECT current_setting('jr.marker', true)") in (None, "")
        other.rollback()


# -- today's store behind transaction pooling (issue 9, point 4) --------------------------------
# Flip these when the pooler-safe store lands: strict xfail turns an unexpected pass into a failure.

POOLER_SAFE = "fixed by the lead's pooler-safe store"


@pytest.mark.parametrize("mode", [
    "session",
    pytest.param("transaction", marks=pytest.mark.xfail(strict=True, reason=POOLER_SAFE)),
])
def test_two_stores_exclude_each_other_on_a_task(pgbouncer, dsn, mode):
    via = pgbouncer(mode)(dsn)
    first, second = CheckpointStore(via), CheckpointStore(via)
    try:
        assert first.try_lock_task(11) is True
        assert second.try_lock_task(11) is False
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("mode", [
    "session",
    pytest.param("transaction", marks=pytest.mark.xfail(strict=True, raises=StoreError, reason=POOLER_SAFE)),
])
def test_two_stores_record_steps_one_after_the_other(pgbouncer, dsn, mode):
    # Today each store PREPAREs its per-step statement as jr_checkpoint_record_step_1: behind
    # transaction pooling the second store meets the first one's backend, where that name is
    # taken ('prepared statement "jr_checkpoint_record_step_1" already exists').
    via = pgbouncer(mode)(dsn)
    first, second = CheckpointStore(via), CheckpointStore(via)
    try:
        for task_id, store in ((21, first), (22, second)):
            store.begin_attempt(task_id, 1)
            store.record_step(task_id, 0, execution_result="success", last_completed_step=0, total_steps=1)
    finally:
        first.close()
        second.close()
    with connect(dsn) as conn:
        assert one(conn, "SELECT array_agg(task_id ORDER BY task_id) FROM jr_step_rewards") == [21, 22]


def test_a_missing_pgbouncer_fails_in_one_line_and_is_never_skipped(monkeypatch):
    from tests import conftest

    monkeypatch.setattr(conftest, "PGBOUNCER_CANDIDATES", ("jr-checkpoint-no-such-pgbouncer",))
    with pytest.raises(pytest.fail.Exception) as info:
        conftest.pgbouncer_binary()
    assert str(info.value) == ("pgbouncer is not installed (looked in PATH and /usr/sbin): "
                               "apt-get install pgbouncer, as .ci/run does")
