"""The step ledger on a real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

from jr_checkpoint import schema
from jr_checkpoint.dsn import resolve
from jr_checkpoint.errors import SchemaMissing, StoreError
from jr_checkpoint.steps import digest as content_hash
from jr_checkpoint.store import (
    MAX_TEXT_BYTES,
    CheckpointStore,
    StepRecord,
)
from tests.conftest import query

STEP_COLUMNS = ("step_number", "step_type", "target_file", "step_content_hash", "execution_result",
                "execution_time_ms", "error_detail", "created_at", "updated_at")
CHECKPOINT_COLUMNS = ("last_completed_step", "total_steps", "checkpoint_data", "created_at", "updated_at")
SUFFIX = "\n...[truncated by jr-checkpoint]"


def step_rows(dsn: str, task_id: int) -> list[dict]:
    rows = query(dsn, f"SELECT {', '.join(STEP_COLUMNS)} FROM jr_step_rewards WHERE task_id = %s "
                      "ORDER BY step_number", (task_id,))
    return [dict(zip(STEP_COLUMNS, row, strict=True)) for row in rows]


def checkpoint_row(dsn: str, task_id: int) -> dict | None:
    rows = query(dsn, f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM jr_task_checkpoints "
                      "WHERE task_id = %s", (task_id,))
    assert len(rows) <= 1
    return dict(zip(CHECKPOINT_COLUMNS, rows[0], strict=True)) if rows else None


def timestamp(text: str) -> datetime:
    """PostgreSQL's JSON timestamps drop trailing zeros of the fraction; Python 3.10 wants 6 digits."""
    head, _, fraction = text.partition(".")
    return datetime.fromisoformat(f"{head}.{fraction.ljust(6, '0')}" if fraction else head)


def from_json(record: dict) -> dict:
    return {k: timestamp(v) if k in ("created_at", "updated_at") else v for k, v in record.items()}


def table_counts(dsn: str) -> tuple[int, int]:
    (row,) = query(dsn, "SELECT (SELECT count(*) FROM jr_step_rewards), "
                        "(SELECT count(*) FROM jr_task_checkpoints)")
    return row


# -- record, load, begin -------------------------------------------------------------------------


def test_record_then_load_task_returns_the_rows_columns(store, dsn):
    write, shell = {"type": "write", "path": "a.py"}, {"type": "bash", "command": "make"}
    store.record_step(7, 0, execution_result="success", step_type="write", target_file="a.py",
                      content_hash=content_hash(write), execution_time_ms=12,
                      last_completed_step=0, total_steps=3)
    store.record_step(7, 1, execution_result="error", step_type="bash", target_file="",
                      content_hash=content_hash(shell), execution_time_ms=5,
                      error_detail="RuntimeError: boom", last_completed_step=0)
    rows = step_rows(dsn, 7)
    assert [{k: v for k, v in row.items() if k not in ("created_at", "updated_at")} for row in rows] == [
        {"step_number": 0, "step_type": "write", "target_file": "a.py",
         "step_content_hash": content_hash(write), "execution_result": "success",
         "execution_time_ms": 12, "error_detail": None},
        {"step_number": 1, "step_type": "bash", "target_file": "",
         "step_content_hash": content_hash(shell), "execution_result": "error",
         "execution_time_ms": 5, "error_detail": "RuntimeError: boom"},
    ]
    loaded = store.load_task(7)
    assert set(loaded) == {"task_id", "checkpoint", "steps"}
    assert loaded["task_id"] == 7
    assert [from_json(step) for step in loaded["steps"]] == rows
    checkpoint = checkpoint_row(dsn, 7)
    assert (checkpoint["last_completed_step"], checkpoint["total_steps"]) == (0, 3)  # total kept
    assert from_json(loaded["checkpoint"]) == checkpoint


def test_load_task_of_an_unknown_task_is_none(store):
    assert store.load_task(404) is None


def test_begin_attempt_loads_the_task_in_one_round_trip(store, dsn):
    store.record_step(7, 0, execution_result="success", content_hash="h0", last_completed_step=0)
    store.record_step(7, 1, execution_result="failed", content_hash="h1", last_completed_step=0)
    before = store.round_trips
    state = store.begin_attempt(7, total_steps=4)
    assert store.round_trips - before == 1
    assert state.attempt == 1
    assert state.steps == {0: StepRecord(0, "success", "h0", "unknown", ""),
                           1: StepRecord(1, "failed", "h1", "unknown", "")}
    assert state.checkpoint == {"last_completed_step": 0, "total_steps": 4,
                                "checkpoint_data": {"attempts": 1}}


def test_begin_attempt_counts_attempts(store, dsn):
    for expected in (1, 2, 3):
        before = store.round_trips
        state = store.begin_attempt(9)
        assert store.round_trips - before == 1
        assert state.attempt == expected
        assert state.steps == {}
    row = checkpoint_row(dsn, 9)
    assert (row["last_completed_step"], row["total_steps"]) == (-1, None)
    assert row["checkpoint_data"] == {"attempts": 3}
    store.record_step(9, 0, execution_result="success", last_completed_step=0, total_steps=2,
                      checkpoint_data={"resume_at": 1})
    state = store.begin_attempt(9)
    assert state.attempt == 4
    assert state.checkpoint == {"last_completed_step": 0, "total_steps": 2,
                                "checkpoint_data": {"attempts": 4, "resume_at": 1}}


def test_record_step_upserts_on_task_and_step_number(store, dsn):
    store.record_step(7, 0, execution_result="failed", step_type="write", target_file="a.py",
                      content_hash="old", execution_time_ms=1, error_detail="nope")
    (first,) = step_rows(dsn, 7)
    store.record_step(7, 0, execution_result="success", step_type="edit", target_file="b.py",
                      content_hash="new", execution_time_ms=2)
    (second,) = step_rows(dsn, 7)
    assert {k: second[k] for k in STEP_COLUMNS[:7]} == {
        "step_number": 0, "step_type": "edit", "target_file": "b.py", "step_content_hash": "new",
        "execution_result": "success", "execution_time_ms": 2, "error_detail": None}
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    assert table_counts(dsn) == (1, 1)


def test_record_step_moves_the_checkpoint_in_the_same_statement(store, dsn):
    for number in range(3):
        before = store.round_trips
        store.record_step(7, number, execution_result="success", last_completed_step=number,
                          total_steps=3 if number == 0 else None, checkpoint_data={"step": number})
        assert store.round_trips - before == 1
        row = checkpoint_row(dsn, 7)
        assert (row["last_completed_step"], row["total_steps"], row["checkpoint_data"]) == (
            number, 3, {"step": number})
    assert table_counts(dsn) == (3, 1)


def test_record_step_is_all_or_nothing(store, dsn):
    # NaN is not JSON: the checkpoint half of the statement fails, so the step row must not stay.
    with pytest.raises(StoreError, match=r"^record_step failed: "):
        store.record_step(7, 0, execution_result="success", checkpoint_data={"x": float("nan")})
    assert table_counts(dsn) == (0, 0)
    store.record_step(7, 0, execution_result="success")  # and the connection is fine
    assert table_counts(dsn) == (1, 1)


def test_finish_task_completed_removes_the_checkpoint_and_keeps_the_steps(store, dsn):
    store.record_step(7, 0, execution_result="success", last_completed_step=0)
    store.record_step(7, 1, execution_result="success", last_completed_step=1)
    assert store.try_lock_task(7) is True
    assert store.finish_task(7, completed=False) is False
    assert checkpoint_row(dsn, 7) is not None
    assert store.try_lock_task(7) is True
    assert store.finish_task(7, completed=True) is True
    assert checkpoint_row(dsn, 7) is None
    assert [row["step_number"] for row in step_rows(dsn, 7)] == [0, 1]


def test_forget_task_removes_both(store, dsn):
    store.record_step(7, 0, execution_result="success")
    store.record_step(7, 1, execution_result="error")
    store.record_step(8, 0, execution_result="success")
    assert store.forget_task(7) == (2, 1)
    assert step_rows(dsn, 7) == []
    assert checkpoint_row(dsn, 7) is None
    assert store.load_task(7) is None
    assert len(step_rows(dsn, 8)) == 1  # other tasks untouched
    assert store.forget_task(7) == (0, 0)


# -- hostile values ------------------------------------------------------------------------------

INJECTION = "'); DROP TABLE jr_step_rewards; --"
HOSTILE = [
    "it's \"quoted\" \\ back\\slash",
    "%s",
    "%(x)s",
    "%(task_id)s %%",
    INJECTION,
    "nul\x00inside\x00",
    "é€😀 ünïcödé",
    "x" * 1_000_000,
]


def expected_text(value: str) -> str:
    text = value.replace("\x00", "\\x00")
    if len(text.encode()) <= MAX_TEXT_BYTES:
        return text
    return text[: MAX_TEXT_BYTES - len(SUFFIX)] + SUFFIX


def test_hostile_values_are_stored_as_data(store, dsn):
    for number, value in enumerate(HOSTILE):
        store.record_step(11, number, execution_result="failed", step_type=value, target_file=value,
                          content_hash=content_hash({"path": value}), error_detail=value)
    rows = step_rows(dsn, 11)
    assert len(rows) == len(HOSTILE)
    for row, value in zip(rows, HOSTILE, strict=True):
        assert row["target_file"] == expected_text(value)
        assert row["error_detail"] == expected_text(value)
        assert row["step_type"] == expected_text(value)[:50]
        assert row["step_content_hash"] == content_hash({"path": value})
    huge = rows[-1]["error_detail"]
    assert len(huge.encode()) == MAX_TEXT_BYTES and huge.endswith(SUFFIX)
    assert rows[5]["error_detail"] == "nul\\x00inside\\x00"
    assert table_counts(dsn) == (len(HOSTILE), 1)
    assert schema.check_tables(resolve(dsn)) == []  # both tables intact


def test_a_long_step_type_is_cut_to_fifty_characters(store, dsn):
    store.record_step(7, 0, execution_result="success", step_type="t" * 200)
    assert step_rows(dsn, 7)[0]["step_type"] == "t" * 50


def test_a_non_utf8_file_name_is_stored(store, dsn):
    name = b"caf\xe9.py".decode("utf-8", "surrogateescape")  # what os.listdir gives for latin-1 names
    store.record_step(7, 0, execution_result="success", target_file=name)
    assert step_rows(dsn, 7)[0]["target_file"] == "caf?.py"


def test_values_sql_cannot_hold_are_refused_cleanly(store, dsn):
    with pytest.raises(StoreError):
        store.record_step(INJECTION, 0, execution_result="success")  # task_id is an INTEGER
    with pytest.raises(StoreError):
        store.record_step(7, 0, execution_result="x" * 21)  # VARCHAR(20)
    with pytest.raises(StoreError):
        store.record_step(2**31, 0, execution_result="success")  # out of INTEGER's range
    assert store.save_checkpoint(7, 0, checkpoint_data={"x": "\x00"}) is False  # jsonb refuses \u0000
    assert table_counts(dsn) == (0, 0)
    store.record_step(7, 0, execution_result="success")
    assert table_counts(dsn) == (1, 1)


# -- connections ---------------------------------------------------------------------------------


def terminate(dsn: str, pid: int) -> None:
    assert query(dsn, "SELECT pg_terminate_backend(%s, 5000)", (pid,)) == [(True,)]


def test_a_record_after_the_server_dropped_the_connection_succeeds(store, dsn):
    store.record_step(7, 0, execution_result="success")
    old_pid = store._conn.info.backend_pid
    terminate(dsn, old_pid)
    store.record_step(7, 1, execution_result="success", last_completed_step=1)
    assert store._conn.info.backend_pid != old_pid
    assert [row["step_number"] for row in step_rows(dsn, 7)] == [0, 1]
    assert checkpoint_row(dsn, 7)["last_completed_step"] == 1


def test_a_dropped_connection_takes_its_locks_back(dsn):
    a, b = CheckpointStore(dsn), CheckpointStore(dsn)
    try:
        assert a.try_lock_task(7) is True
        terminate(dsn, a._conn.info.backend_pid)  # the server released A's lock with its session
        a.record_step(7, 0, execution_result="success")  # reconnects and takes the lock back
        assert b.try_lock_task(7) is False
        a.finish_task(7, completed=True)
        assert b.try_lock_task(7) is True
    finally:
        a.close()
        b.close()


def test_two_threads_share_one_store(store, dsn):
    barrier = threading.Barrier(2)
    errors = []

    def work(offset):
        try:
            barrier.wait()
            for number in range(offset, offset + 100):
                store.record_step(21, number, execution_result="success", last_completed_step=number)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in (0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [row["step_number"] for row in step_rows(dsn, 21)] == list(range(200))
    assert store.round_trips == 200
    assert table_counts(dsn) == (200, 1)


def test_advisory_lock_between_two_stores(dsn):
    a, b = CheckpointStore(dsn), CheckpointStore(dsn)
    try:
        assert a.try_lock_task(7) is True
        assert a.try_lock_task(7) is False  # PostgreSQL would say yes again: the guard is the store's
        assert b.try_lock_task(7) is False
        assert b.lock_task(7, timeout=0.1) is False
        assert b.try_lock_task(8) is True  # another task is free
        a.finish_task(7, completed=True)
        assert b.try_lock_task(7) is True
        assert a.try_lock_task(7) is False
    finally:
        a.close()
        b.close()


def test_schema_missing_says_run_migrate(empty_dsn):
    store = CheckpointStore(empty_dsn)
    try:
        for call in (lambda: store.record_step(7, 0, execution_result="success"),
                     lambda: store.begin_attempt(7),
                     lambda: store.load_task(7),
                     lambda: store.forget_task(7)):
            with pytest.raises(SchemaMissing) as info:
                call()
            assert str(info.value) == ("the checkpoint tables do not exist at "
                                       f"{resolve(empty_dsn).describe()}: run `jr-checkpoint migrate`")
        pid = store._conn.info.backend_pid
        schema.create_tables(resolve(empty_dsn))
        store.record_step(7, 0, execution_result="success")  # same session: nothing was left aborted
        assert store._conn.info.backend_pid == pid
    finally:
        store.close()


# -- the seed's trio -----------------------------------------------------------------------------


def test_seed_trio_semantics(store, dsn):
    assert store.get_last_checkpoint(5) is None
    assert store.save_checkpoint(5, 2, 10, {"phase": "build", "n": [1, 2]}) is True
    assert store.get_last_checkpoint(5) == {"last_completed_step": 2, "total_steps": 10,
                                            "checkpoint_data": {"phase": "build", "n": [1, 2]}}
    first = checkpoint_row(dsn, 5)
    # total_steps=None keeps the stored total (COALESCE); checkpoint_data=None replaces the data.
    assert store.save_checkpoint(5, 3) is True
    assert store.get_last_checkpoint(5) == {"last_completed_step": 3, "total_steps": 10,
                                            "checkpoint_data": None}
    second = checkpoint_row(dsn, 5)
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    # A falsy checkpoint_data is stored as SQL NULL, not as JSON.
    assert store.save_checkpoint(5, 4, 12, {}) is True
    assert store.get_last_checkpoint(5) == {"last_completed_step": 4, "total_steps": 12,
                                            "checkpoint_data": None}
    assert query(dsn, "SELECT checkpoint_data IS NULL FROM jr_task_checkpoints "
                      "WHERE task_id = 5") == [(True,)]
    assert store.save_checkpoint(6, 0) is True
    assert store.get_last_checkpoint(6) == {"last_completed_step": 0, "total_steps": None,
                                            "checkpoint_data": None}
    assert table_counts(dsn) == (0, 2)
    assert store.cleanup_checkpoints(5) is True
    assert store.get_last_checkpoint(5) is None
    assert store.cleanup_checkpoints(5) is True  # nothing to remove is still a success
    assert store.get_last_checkpoint(6) is not None
    assert table_counts(dsn) == (0, 1)


def test_seed_trio_on_a_database_without_the_tables(empty_dsn, caplog):
    store = CheckpointStore(empty_dsn)
    try:
        assert store.save_checkpoint(5, 1) is False
        assert store.get_last_checkpoint(5) is None
        assert store.cleanup_checkpoints(5) is False
    finally:
        store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3
    assert warnings[0].startswith("[JrQueue] Failed to save checkpoint for task 5: the checkpoint tables")
    assert all(w.endswith("run `jr-checkpoint migrate`") for w in warnings)


def test_the_per_step_statement_is_prepared_once_and_survives_a_failure(store, dsn):
    def prepared_names():
        with store._conn.cursor() as cur:
            cur.execute("SELECT name FROM pg_prepared_statements ORDER BY name")
            return [name for (name,) in cur.fetchall()]

    store.record_step(7, 0, execution_result="success")
    store.record_step(7, 1, execution_result="success")
    assert prepared_names() == ["jr_checkpoint_record_step_1"]
    with pytest.raises(StoreError):
        store.record_step(7, 2, execution_result="x" * 21)  # fails inside EXECUTE
    store.record_step(7, 2, execution_result="failed")
    store.record_step(7, 3, execution_result="success")
    assert prepared_names() == ["jr_checkpoint_record_step_1", "jr_checkpoint_record_step_2"]
    assert [row["execution_result"] for row in step_rows(dsn, 7)] == ["success", "success", "failed",
                                                                      "success"]
