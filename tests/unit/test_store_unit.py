"""The ledger's logic and fault paths, without a server: a scripted fake connection."""

from __future__ import annotations

import hashlib
import logging
import os
import re

import psycopg2
import psycopg2.errors
import pytest

from jr_checkpoint import dsn as dsn_module
from jr_checkpoint import store as store_module
from jr_checkpoint.errors import DatabaseUnavailable, SchemaMissing, StoreError
from jr_checkpoint.sql import QUERIES
from jr_checkpoint.store import (
    MAX_TEXT_BYTES,
    CheckpointStore,
    StepRecord,
    bound_text,
)

SUFFIX = "\n...[truncated by jr-checkpoint]"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- bound_text --------------------------------------------------------------------------------


def test_bound_text_keeps_short_text():
    assert bound_text(None) is None
    assert bound_text("it's %s %(x)s") == "it's %s %(x)s"
    assert bound_text(42) == "42"
    exact = "x" * MAX_TEXT_BYTES
    assert bound_text(exact) == exact


def test_bound_text_escapes_nul():
    assert bound_text("a\x00b") == "a\\x00b"


def test_bound_text_limits_utf8_bytes_not_characters():
    out = bound_text("x" * (MAX_TEXT_BYTES + 1))
    assert out.endswith(SUFFIX)
    assert len(out.encode("utf-8")) == MAX_TEXT_BYTES
    assert out == "x" * (MAX_TEXT_BYTES - len(SUFFIX)) + SUFFIX
    # 5000 two-byte characters are 10000 bytes: too many, although only 5000 characters.
    assert len(bound_text("é" * 5000).encode("utf-8")) <= MAX_TEXT_BYTES


@pytest.mark.parametrize("char", ["é", "€", "😀"])
@pytest.mark.parametrize("lead", ["", "a", "ab", "abc"])
def test_bound_text_never_splits_a_multibyte_character(char, lead):
    out = bound_text(lead + char * 5000)
    body = out[: -len(SUFFIX)]
    assert out.endswith(SUFFIX)
    assert body == lead + char * (len(body) - len(lead))
    size = len(out.encode("utf-8"))
    assert MAX_TEXT_BYTES - len(char.encode()) < size <= MAX_TEXT_BYTES


def test_bound_text_custom_limit():
    assert bound_text("abcdef", limit=6) == "abcdef"
    assert bound_text("a" * 100, limit=40) == "a" * (40 - len(SUFFIX)) + SUFFIX


def test_bound_text_replaces_lone_surrogates():
    # os.fsdecode() of a non-UTF-8 file name; PostgreSQL cannot store it, psycopg2 cannot encode it.
    name = os.fsdecode(b"caf\xe9.py")
    assert bound_text(name) == "caf?.py"
    assert bound_text(name).encode("utf-8") == b"caf?.py"


# -- a scripted connection ---------------------------------------------------------------------


class Drop(Exception):
    """In a script: the server drops the connection while running this statement."""

    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.row = None
        self.rowcount = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        if self.conn.closed:
            raise psycopg2.InterfaceError("connection already closed")
        self.conn.executed.append((sql, params))
        outcome = self.conn.script.pop(0) if self.conn.script else (None,)
        if isinstance(outcome, Drop):
            self.conn.closed = 2
            raise outcome.exc
        if isinstance(outcome, BaseException):
            raise outcome
        self.row = outcome
        self.rowcount = 1

    def fetchone(self):
        return self.row

    def fetchall(self):
        return self.row


class FakeConnection:
    def __init__(self, *script):
        self.script = list(script)
        self.executed: list[tuple[str, object]] = []
        self.closed = 0
        self.autocommit = False
        self.close_calls = 0

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.close_calls += 1
        self.closed = 1

    @property
    def names(self):
        """The named query behind each statement sent; a prepared one by its query's name too."""
        by_text = {text: name for name, text in QUERIES.items()}
        names = []
        for sql, _ in self.executed:
            prepared = re.match(r"(?:PREPARE|EXECUTE) jr_checkpoint_(\w+?)_\d+ ", sql)
            names.append(by_text.get(sql) or (prepared and prepared.group(1)) or sql)
        return names


DSN = "host=db.invalid port=6000 dbname=ledger password=s3cret-pw"


@pytest.fixture
def connect(mocker):
    """Target.connect, replaced: give it connections with ``connect.side_effect = [...]``."""
    return mocker.patch.object(dsn_module.Target, "connect", autospec=True)


def record(store, step_number=0, **kwargs):
    kwargs.setdefault("execution_result", "success")
    store.record_step(7, step_number, **kwargs)


def test_constructing_a_store_touches_nothing(connect, mocker):
    resolve = mocker.spy(dsn_module, "resolve")
    CheckpointStore(DSN)
    assert connect.call_count == 0
    assert resolve.call_count == 0


def test_connection_is_lazy_autocommit_and_reused(connect):
    conn = FakeConnection()
    connect.side_effect = [conn]
    store = CheckpointStore(DSN, connect_timeout=3)
    record(store, 0)
    record(store, 1)
    assert connect.call_count == 1
    assert connect.call_args.args[1] == 3  # the store's connect_timeout reaches libpq
    assert conn.autocommit is True
    assert conn.names == ["record_step", "record_step"]
    assert store.round_trips == 2


def test_record_step_is_one_statement_with_bounded_values(connect):
    conn = FakeConnection()
    connect.side_effect = [conn]
    store = CheckpointStore(DSN)
    store.record_step(7, 3, execution_result="error", step_type="t" * 200, target_file="a\x00b",
                      content_hash="h" * 64, execution_time_ms=-5, error_detail="e" * 100_000,
                      last_completed_step=2, total_steps=9, checkpoint_data={"b": 1, "a": (1, 2)})
    store.record_step(7, 4, execution_result="success", execution_time_ms=2**40)
    (sql, params), (_, second) = conn.executed
    assert conn.names == ["record_step", "record_step"]
    assert params == {
        "task_id": 7, "step_number": 3, "step_type": "t" * 50, "target_file": "a\\x00b",
        "content_hash": "h" * 64, "execution_result": "error", "execution_time_ms": 0,
        "error_detail": "e" * (MAX_TEXT_BYTES - len(SUFFIX)) + SUFFIX,
        "last_completed_step": 2, "total_steps": 9, "checkpoint_data": '{"a":[1,2],"b":1}',
    }
    assert second["execution_time_ms"] == 2**31 - 1
    assert second["step_type"] == "unknown"
    assert second["target_file"] == ""
    assert second["error_detail"] is None
    assert second["checkpoint_data"] is None
    assert store.round_trips == 2


def test_begin_attempt_reads_the_one_row(connect):
    checkpoint = {"last_completed_step": 1, "total_steps": 4, "checkpoint_data": {"attempts": 3}}
    conn = FakeConnection((checkpoint, [[0, "success", "h0"], [1, "failed", None]]))
    connect.side_effect = [conn]
    state = CheckpointStore(DSN).begin_attempt(7, total_steps=4)
    assert conn.names == ["begin_attempt"]
    assert conn.executed[0][1] == {"task_id": 7, "total_steps": 4}
    assert state.attempt == 3
    assert state.checkpoint == checkpoint
    assert state.steps == {0: StepRecord(0, "success", "h0"), 1: StepRecord(1, "failed", None)}


# -- a dropped connection: one reconnect, one retry --------------------------------------------


def dropped():
    return Drop(psycopg2.OperationalError("server closed the connection unexpectedly"))


def test_operational_error_on_a_dropped_connection_reconnects_and_retries_once(connect):
    first, second = FakeConnection((None,), dropped()), FakeConnection()
    connect.side_effect = [first, second]
    store = CheckpointStore(DSN)
    record(store, 0)
    record(store, 1, error_detail="boom")
    assert connect.call_count == 2
    assert first.names == ["record_step", "record_step"]
    assert second.names == ["record_step"]
    assert second.executed[0][1] == first.executed[1][1]  # the same statement, the same values
    assert second.autocommit is True
    assert store._conn is second
    assert store.round_trips == 3


def test_a_second_failure_is_database_unavailable(connect):
    first, second = FakeConnection((None,), dropped()), FakeConnection(dropped())
    connect.side_effect = [first, second, AssertionError("a third connection")]
    store = CheckpointStore(DSN)
    record(store, 0)
    with pytest.raises(DatabaseUnavailable) as info:
        record(store, 1)
    assert connect.call_count == 2
    message = str(info.value)
    assert message == ("lost the connection to PostgreSQL at host=db.invalid port=6000 dbname=ledger: "
                       "server closed the connection unexpectedly")
    assert isinstance(info.value.__cause__, psycopg2.OperationalError)


def test_reconnect_failing_is_database_unavailable(connect):
    first = FakeConnection((None,), dropped())
    refused = DatabaseUnavailable("cannot connect to PostgreSQL at host=db.invalid: refused")
    connect.side_effect = [first, refused]
    store = CheckpointStore(DSN)
    record(store, 0)
    with pytest.raises(DatabaseUnavailable, match="refused"):
        record(store, 1)
    assert connect.call_count == 2


def test_a_fresh_connection_that_drops_is_not_retried(connect):
    connect.side_effect = [FakeConnection(dropped()), AssertionError("a second connection")]
    with pytest.raises(DatabaseUnavailable):
        record(CheckpointStore(DSN), 0)
    assert connect.call_count == 1


@pytest.mark.parametrize("error", [
    psycopg2.errors.UniqueViolation("duplicate key"),
    psycopg2.errors.StringDataRightTruncation("value too long for type character varying(20)"),
    psycopg2.errors.QueryCanceled("canceling statement due to statement timeout"),  # an OperationalError
    ValueError("A string literal cannot contain NUL (0x00) characters."),
])
def test_a_statement_error_is_store_error_and_the_connection_is_reused(connect, error):
    conn = FakeConnection(error, (None,))
    connect.side_effect = [conn, AssertionError("a second connection")]
    store = CheckpointStore(DSN)
    with pytest.raises(StoreError) as info:
        record(store, 0)
    assert type(info.value) is StoreError
    assert str(info.value) == f"record_step failed: {error}"
    record(store, 1)  # autocommit: nothing was left aborted, the same connection goes on
    assert connect.call_count == 1
    assert conn.close_calls == 0
    assert conn.names == ["record_step", "record_step"]


def test_undefined_table_is_schema_missing(connect):
    connect.side_effect = [FakeConnection(psycopg2.errors.UndefinedTable("relation does not exist"))]
    with pytest.raises(SchemaMissing) as info:
        record(CheckpointStore(DSN), 0)
    assert str(info.value) == ("the checkpoint tables do not exist at host=db.invalid port=6000 "
                               "dbname=ledger: run `jr-checkpoint migrate`")


def test_reconnect_retakes_the_locks_this_store_held(connect):
    first = FakeConnection((True,), dropped())
    second = FakeConnection((True,), (None,))
    connect.side_effect = [first, second]
    store = CheckpointStore(DSN)
    assert store.try_lock_task(7) is True
    record(store, 0)
    assert second.names == ["try_lock_task", "record_step"]
    assert second.executed[0][1] == {"namespace": store_module.LOCK_NAMESPACE, "task_id": 7}
    assert store._held == {7}


def test_a_failure_while_retaking_locks_is_a_checkpoint_error(connect):
    first = FakeConnection((True,), dropped())
    second, third = FakeConnection(dropped()), FakeConnection((True,), dropped())
    connect.side_effect = [first, second, third]
    store = CheckpointStore(DSN)
    store.try_lock_task(7)
    with pytest.raises(DatabaseUnavailable) as info:
        record(store, 0)
    assert str(info.value) == ("lost the connection to PostgreSQL at host=db.invalid port=6000 "
                               "dbname=ledger: server closed the connection unexpectedly")
    assert store.save_checkpoint(7, 0) is False  # and the seed's trio still answers False
    assert third.names == ["try_lock_task", "save_checkpoint"]


# -- fork --------------------------------------------------------------------------------------


def test_a_forked_child_opens_its_own_connection_and_never_closes_the_parents(connect, mocker):
    parent, child = FakeConnection((True,), (None,)), FakeConnection()
    connect.side_effect = [parent, child]
    store = CheckpointStore(DSN)
    assert store.try_lock_task(7) is True
    record(store, 0)
    mocker.patch.object(store_module.os, "getpid", return_value=os.getpid() + 1)
    record(store, 1)
    assert connect.call_count == 2
    assert parent.close_calls == 0
    assert parent.closed == 0
    assert store._orphans == [parent]
    assert store._conn is child
    assert store._held == set()  # the parent's advisory locks are not the child's
    assert child.names == ["record_step"]
    store.close()
    assert child.close_calls == 1
    assert parent.close_calls == 0


def test_close_in_a_forked_child_leaves_the_parents_connection_open(connect, mocker):
    parent = FakeConnection()
    connect.side_effect = [parent]
    store = CheckpointStore(DSN)
    record(store, 0)
    mocker.patch.object(store_module.os, "getpid", return_value=os.getpid() + 1)
    store.close()
    assert parent.close_calls == 0
    assert store._conn is None


def test_close_closes_and_forgets(connect):
    first, second = FakeConnection((True,)), FakeConnection()
    connect.side_effect = [first, second]
    store = CheckpointStore(DSN)
    store.try_lock_task(7)
    store.close()
    assert first.close_calls == 1
    assert store._held == set()
    record(store, 0)
    assert connect.call_count == 2


# -- the seed's trio ---------------------------------------------------------------------------


def test_seed_trio_sends_the_seeds_values(connect):
    conn = FakeConnection((None,), (None,), (3, 10, {"a": 1}), None, (None,))
    connect.side_effect = [conn]
    store = CheckpointStore(DSN)
    assert store.save_checkpoint(5, 3, 10, {"a": 1}) is True
    assert store.save_checkpoint(5, 4, checkpoint_data={}) is True
    assert store.get_last_checkpoint(5) == {"last_completed_step": 3, "total_steps": 10,
                                            "checkpoint_data": {"a": 1}}
    assert store.get_last_checkpoint(6) is None
    assert store.cleanup_checkpoints(5) is True
    assert conn.names == ["save_checkpoint", "save_checkpoint", "get_last_checkpoint",
                          "get_last_checkpoint", "cleanup_checkpoints"]
    params = [p for _, p in conn.executed]
    assert params[0] == {"task_id": 5, "last_completed_step": 3, "total_steps": 10,
                         "checkpoint_data": '{"a":1}'}
    assert params[1] == {"task_id": 5, "last_completed_step": 4, "total_steps": None,
                         "checkpoint_data": None}  # falsy data is stored as NULL, as in the seed
    assert params[4] == {"task_id": 5}


def test_seed_trio_answers_false_or_none_and_warns_when_the_database_is_down(connect, caplog):
    connect.side_effect = DatabaseUnavailable("cannot connect to PostgreSQL at host=db.invalid")
    store = CheckpointStore(DSN)
    with caplog.at_level(logging.WARNING, logger="jr_checkpoint.store"):
        assert store.save_checkpoint(5, 1) is False
        assert store.get_last_checkpoint(5) is None
        assert store.cleanup_checkpoints(5) is False
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "[JrQueue] Failed to save checkpoint for task 5: "
                          "cannot connect to PostgreSQL at host=db.invalid"),
        (logging.WARNING, "[JrQueue] Failed to get checkpoint for task 5: "
                          "cannot connect to PostgreSQL at host=db.invalid"),
        (logging.WARNING, "[JrQueue] Failed to cleanup checkpoints for task 5: "
                          "cannot connect to PostgreSQL at host=db.invalid"),
    ]


def test_seed_trio_answers_false_or_none_on_a_query_error(connect, caplog):
    error = psycopg2.errors.UndefinedTable("relation does not exist")
    connect.side_effect = [FakeConnection(error, error, error)]
    store = CheckpointStore(DSN)
    assert store.save_checkpoint(5, 1) is False
    assert store.get_last_checkpoint(5) is None
    assert store.cleanup_checkpoints(5) is False
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3
    assert all("jr-checkpoint migrate" in r.getMessage() for r in caplog.records)


# -- task locks --------------------------------------------------------------------------------


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time():
    return FakeTime()


def polling_store(mocker, fake_time, answers):
    store = CheckpointStore(DSN, sleep=fake_time.sleep, clock=fake_time.clock)
    run = mocker.patch.object(store, "_run", side_effect=[(a,) for a in answers])
    return store, run


def test_lock_task_gives_up_at_the_timeout_without_real_waiting(mocker, fake_time):
    store, run = polling_store(mocker, fake_time, [False] * 50)
    assert store.lock_task(7, timeout=1.0) is False
    assert fake_time.now == pytest.approx(101.0)
    assert sum(fake_time.sleeps) == pytest.approx(1.0)
    assert fake_time.sleeps[:5] == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.32])  # doubling
    assert max(fake_time.sleeps) <= 0.5
    assert run.call_count == len(fake_time.sleeps) + 1  # one last try at the deadline
    assert store._held == set()


def test_lock_task_polls_until_free(mocker, fake_time):
    store, run = polling_store(mocker, fake_time, [False, False, True])
    assert store.lock_task(7, timeout=10) is True
    assert run.call_count == 3
    assert fake_time.sleeps == pytest.approx([0.02, 0.04])
    assert store._held == {7}


def test_lock_task_without_timeout_tries_once(mocker, fake_time):
    store, run = polling_store(mocker, fake_time, [False])
    assert store.lock_task(7) is False
    assert run.call_count == 1
    assert fake_time.sleeps == []


def test_lock_task_with_timeout_none_waits_as_long_as_it_takes(mocker, fake_time):
    store, run = polling_store(mocker, fake_time, [False] * 30 + [True])
    assert store.lock_task(7, timeout=None) is True
    assert run.call_count == 31
    assert fake_time.sleeps[-10:] == [0.5] * 10  # the pause stops growing at half a second


def test_try_lock_task_twice_in_one_store_refuses_without_a_query(connect):
    conn = FakeConnection((True,), (True, 0), (True,))
    connect.side_effect = [conn]
    store = CheckpointStore(DSN)
    assert store.try_lock_task(7) is True
    assert store.try_lock_task(7) is False
    assert store.lock_task(7, timeout=0) is False
    assert conn.names == ["try_lock_task"]
    assert store.finish_task(7, completed=False) is False
    assert conn.executed[1][1] == {"namespace": store_module.LOCK_NAMESPACE, "task_id": 7,
                                   "completed": False}
    assert store.try_lock_task(7) is True  # released, so it may be taken again
    assert conn.names == ["try_lock_task", "finish_task", "try_lock_task"]


def test_a_lock_held_elsewhere_is_not_remembered(connect):
    connect.side_effect = [FakeConnection((False,))]
    store = CheckpointStore(DSN)
    assert store.try_lock_task(7) is False
    assert store._held == set()


def test_finish_task_forgets_the_lock_even_when_the_query_fails(connect):
    conn = FakeConnection((True,), psycopg2.errors.UndefinedTable("gone"))
    connect.side_effect = [conn]
    store = CheckpointStore(DSN)
    store.try_lock_task(7)
    with pytest.raises(SchemaMissing):
        store.finish_task(7, completed=True)
    assert store._held == set()


def test_the_per_step_statement_is_prepared_once_per_connection(connect):
    first, second = FakeConnection(), FakeConnection()
    connect.side_effect = [first, second]
    store = CheckpointStore(DSN)
    record(store, 0)
    record(store, 1)
    sent = [sql for sql, _ in first.executed]
    assert sent[0].startswith("PREPARE jr_checkpoint_record_step_1 AS ")
    assert "\nEXECUTE jr_checkpoint_record_step_1 (%(task_id)s, %(step_number)s," in sent[0]
    assert sent[1].startswith("EXECUTE jr_checkpoint_record_step_1 (")
    assert "$1" in sent[0] and "%(task_id)s" not in sent[0].split("\nEXECUTE")[0]
    first.closed = 2  # the server dropped it: a new connection prepares again, under a new name
    record(store, 2)
    assert second.executed[0][0].startswith("PREPARE jr_checkpoint_record_step_2 AS ")
