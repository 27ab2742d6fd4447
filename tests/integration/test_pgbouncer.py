"""The `pgbouncer` fixture, why session state breaks behind transaction pooling, and the
store working through PgBouncer in both pool modes.

Through a real PgBouncer: in ``session`` mode a client keeps its server backend, so a SET or an
advisory lock lasts as long as the client's connection; in ``transaction`` mode the backend
goes back to the pool after each transaction, and the next client to come may get it, with
the first client's SET, advisory locks and prepared statements still on it.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg2
import psycopg2.extensions
import pytest

from jr_checkpoint import CheckpointStore
from jr_checkpoint.errors import TaskOwnershipLost


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


# -- the store behind PgBouncer, in both pool modes (issue 9, point 4) -------------------------
# No session state: a lease in the checkpoint row instead of an advisory lock, plpgsql functions
# instead of PREPARE, so a client's statements may land on any backend.

MODES = ["session", "transaction"]


@contextlib.contextmanager
def stores(via: str, count: int):
    made = [CheckpointStore(via) for _ in range(count)]
    try:
        yield made
    finally:
        for store in made:
            store.close()


def rows(dsn: str, task_id: int) -> list[tuple]:
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT step_number, execution_result FROM jr_step_rewards WHERE task_id = %s "
                    "ORDER BY step_number", (task_id,))
        return cur.fetchall()


@pytest.mark.parametrize("mode", MODES)
def test_two_stores_exclude_each_other_on_a_task(pgbouncer, dsn, mode):
    with stores(pgbouncer(mode)(dsn), 2) as (first, second):
        mine = first.begin_task(11)
        assert mine is not None
        assert second.begin_task(11) is None
        assert second.begin_task(11, wait=0.2) is None
        first.record_step(11, 0, owner=mine.owner, execution_result="success", last_completed_step=0)
        assert second.begin_task(11) is None  # still, after a write on whatever backend
        first.release_task(11, mine.owner, completed=False)
        theirs = second.begin_task(11)
        assert theirs is not None and theirs.attempt == 2
        with pytest.raises(TaskOwnershipLost):
            first.record_step(11, 1, owner=mine.owner, execution_result="success")


@pytest.mark.parametrize("mode", MODES)
def test_two_stores_record_steps_one_after_the_other(pgbouncer, dsn, mode):
    # The old store PREPAREd its per-step statement under one name: behind transaction pooling
    # the second store met the first one's backend, where that name was taken.
    with stores(pgbouncer(mode)(dsn), 2) as (first, second):
        owners = {21: first.begin_task(21, 2).owner, 22: second.begin_task(22, 2).owner}
        for number in range(2):
            for task_id, store in ((21, first), (22, second)):
                store.record_step(task_id, number, owner=owners[task_id], execution_result="success",
                                  last_completed_step=number, total_steps=2)
        assert first.release_task(21, owners[21], completed=True) == "released"
        assert second.release_task(22, owners[22], completed=True) == "released"
    with connect(dsn) as conn:
        assert one(conn, "SELECT array_agg(task_id ORDER BY task_id, step_number) "
                         "FROM jr_step_rewards") == [21, 21, 22, 22]
        assert one(conn, "SELECT count(*) FROM jr_task_checkpoints") == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_task_and_its_retry_on_another_store(pgbouncer, dsn, mode):
    with stores(pgbouncer(mode)(dsn), 2) as (first, second):
        state = first.begin_task(31, 4)
        for number, result in enumerate(("success", "success", "failed")):
            first.record_step(31, number, owner=state.owner, execution_result=result,
                              content_hash=f"h{number}", last_completed_step=min(number, 1))
        assert first.release_task(31, state.owner, completed=False) == "kept"
        retry = second.begin_task(31)
        assert retry.attempt == 2
        assert {n: (r.execution_result, r.content_hash) for n, r in retry.steps.items()} == {
            0: ("success", "h0"), 1: ("success", "h1"), 2: ("failed", "h2")}
        assert retry.checkpoint["last_completed_step"] == 1
        for number in (2, 3):
            second.record_step(31, number, owner=retry.owner, execution_result="success",
                               last_completed_step=number)
        assert second.release_task(31, retry.owner, completed=True) == "released"
    assert rows(dsn, 31) == [(n, "success") for n in range(4)]


@pytest.mark.parametrize("mode", MODES)
def test_three_racing_workers_hold_the_task_one_at_a_time(pgbouncer, dsn, mode):
    via = pgbouncer(mode)(dsn)
    start = threading.Barrier(3)
    held: list[tuple[float, float, int]] = []  # (taken, released, attempt) for each worker
    errors: list[BaseException] = []

    def worker(store):
        try:
            start.wait(timeout=30)
            state = store.begin_task(41, 5, wait=None)
            taken = time.monotonic()
            for number in range(5):
                store.record_step(41, number, owner=state.owner, execution_result="success",
                                  last_completed_step=number, total_steps=5)
            released = time.monotonic()
            store.release_task(41, state.owner, completed=False)
            held.append((taken, released, state.attempt))
        except BaseException as exc:  # reported below
            errors.append(exc)

    with stores(via, 3) as workers:
        threads = [threading.Thread(target=worker, args=(store,)) for store in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    held.sort()
    assert sorted(attempt for _, _, attempt in held) == [1, 2, 3]
    for (_, released, _), (taken, _, _) in zip(held, held[1:], strict=False):
        assert released < taken  # no two workers held the task at once
    assert rows(dsn, 41) == [(n, "success") for n in range(5)]  # each step row once
    with connect(dsn) as conn:
        assert one(conn, "SELECT checkpoint_data FROM jr_task_checkpoints WHERE task_id = 41") == {
            "attempts": 3, "fence": 3}  # three owners, none left


def test_a_missing_pgbouncer_fails_in_one_line_and_is_never_skipped(monkeypatch):
    from tests import conftest

    monkeypatch.setattr(conftest, "PGBOUNCER_CANDIDATES", ("jr-checkpoint-no-such-pgbouncer",))
    with pytest.raises(pytest.fail.Exception) as info:
        conftest.pgbouncer_binary()
    assert str(info.value) == ("pgbouncer is not installed (looked in PATH and /usr/sbin): "
                               "apt-get install pgbouncer, as .ci/run does")
