"""The step ledger on a real PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from jr_checkpoint import schema
from jr_checkpoint import store as store_module
from jr_checkpoint.dsn import resolve
from jr_checkpoint.errors import SchemaMissing, StoreError, TaskOwnershipLost
from jr_checkpoint.lease import holder_identity
from jr_checkpoint.shape import fit
from jr_checkpoint.steps import digest as content_hash
from jr_checkpoint.store import (
    MAX_TEXT_BYTES,
    CheckpointStore,
    StepRecord,
)
from tests.conftest import named, query, record_row
from tests.waiting import wait_until

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


def lease_data(dsn: str, task_id: int) -> dict | None:
    """The checkpoint row's checkpoint_data, as the server has it now."""
    rows = query(dsn, "SELECT checkpoint_data FROM jr_task_checkpoints WHERE task_id = %s", (task_id,))
    return rows[0][0] if rows else None


def server_now(dsn: str) -> float:
    return float(query(dsn, "SELECT extract(epoch FROM clock_timestamp())")[0][0])


@contextlib.contextmanager
def stores(dsn: str, *options: dict):
    made = [CheckpointStore(dsn, **each) for each in options]
    try:
        yield made
    finally:
        for each in made:
            each.close()


# -- record, load, begin -------------------------------------------------------------------------


def test_record_then_load_task_returns_the_rows_columns(store, dsn):
    write, shell = {"type": "write", "path": "a.py"}, {"type": "bash", "command": "make"}
    owner = store.begin_task(7, 3).owner
    store.record_step(7, 0, owner=owner, execution_result="success", step_type="write",
                      target_file="a.py", content_hash=content_hash(write), execution_time_ms=12,
                      last_completed_step=0, total_steps=3)
    store.record_step(7, 1, owner=owner, execution_result="error", step_type="bash", target_file="",
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
    assert checkpoint["checkpoint_data"]["owner"] == owner
    assert from_json(loaded["checkpoint"]) == checkpoint


def test_load_task_of_an_unknown_task_is_none(store):
    assert store.load_task(404) is None


def test_begin_task_loads_the_task_in_one_round_trip(store, dsn):
    before = store.round_trips
    first = store.begin_task(7, total_steps=4)
    assert store.round_trips - before == 1
    assert (first.attempt, first.steps) == (1, {})
    store.record_step(7, 0, owner=first.owner, execution_result="success", content_hash="h0",
                      step_type="write", target_file="a.py", last_completed_step=0)
    store.record_step(7, 1, owner=first.owner, execution_result="failed", content_hash="h1",
                      last_completed_step=0)
    store.release_task(7, first.owner, completed=False)
    before = store.round_trips
    started = server_now(dsn)
    state = store.begin_task(7)
    assert store.round_trips - before == 1
    assert state.attempt == 2
    assert state.owner != first.owner
    assert state.steps == {0: StepRecord(0, "success", "h0", "write", "a.py"),
                           1: StepRecord(1, "failed", "h1", "unknown", "")}
    data = state.checkpoint["checkpoint_data"]
    assert state.checkpoint == {"last_completed_step": 0, "total_steps": 4, "checkpoint_data": data}
    assert {k: v for k, v in data.items() if k != "lease_until"} == {
        "attempts": 2, "owner": state.owner, "fence": 2, "holder": holder_identity()}
    assert started + store.lease <= data["lease_until"] <= server_now(dsn) + store.lease
    assert lease_data(dsn, 7) == data


def test_begin_task_counts_attempts(store, dsn):
    for expected in (1, 2, 3):
        before = store.round_trips
        state = store.begin_task(9)
        assert store.round_trips - before == 1
        assert state.attempt == expected
        assert state.steps == {}
        assert store.release_task(9, state.owner, completed=False) == "kept"
    row = checkpoint_row(dsn, 9)
    assert (row["last_completed_step"], row["total_steps"]) == (-1, None)
    assert row["checkpoint_data"] == {"attempts": 3, "fence": 3}  # no owner: nobody runs it now
    assert store.begin_task(9).attempt == 4


def test_record_step_upserts_on_task_and_step_number(store, dsn):
    owner = store.begin_task(7).owner
    store.record_step(7, 0, owner=owner, execution_result="failed", step_type="write",
                      target_file="a.py", content_hash="old", execution_time_ms=1, error_detail="nope")
    (first,) = step_rows(dsn, 7)
    store.record_step(7, 0, owner=owner, execution_result="success", step_type="edit",
                      target_file="b.py", content_hash="new", execution_time_ms=2)
    (second,) = step_rows(dsn, 7)
    assert {k: second[k] for k in STEP_COLUMNS[:7]} == {
        "step_number": 0, "step_type": "edit", "target_file": "b.py", "step_content_hash": "new",
        "execution_result": "success", "execution_time_ms": 2, "error_detail": None}
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    assert table_counts(dsn) == (1, 1)


def test_record_step_moves_the_checkpoint_in_the_same_statement(store, dsn):
    owner = store.begin_task(7).owner
    for number in range(3):
        lease_before = lease_data(dsn, 7)["lease_until"]
        before = store.round_trips
        store.record_step(7, number, owner=owner, execution_result="success",
                          last_completed_step=number, total_steps=3 if number == 0 else None)
        assert store.round_trips - before == 1
        row = checkpoint_row(dsn, 7)
        assert (row["last_completed_step"], row["total_steps"]) == (number, 3)
        # The lease is the keeper's business: a record rewrites no JSON.
        assert row["checkpoint_data"]["lease_until"] == lease_before
    assert table_counts(dsn) == (3, 1)


def test_record_step_is_all_or_nothing(store, dsn):
    # The checkpoint moves first, then the step row fails (VARCHAR(20)): neither may stay.
    owner = store.begin_task(7).owner
    before = checkpoint_row(dsn, 7)
    with pytest.raises(StoreError, match=r"^record_step failed at .*: value too long"):
        store.record_step(7, 0, owner=owner, execution_result="x" * 21, last_completed_step=5)
    assert checkpoint_row(dsn, 7) == before
    assert table_counts(dsn) == (0, 1)
    store.record_step(7, 0, owner=owner, execution_result="success")  # and the connection is fine
    assert table_counts(dsn) == (1, 1)


def test_release_completed_removes_the_checkpoint_and_keeps_the_steps(store, dsn):
    owner = store.begin_task(7).owner
    store.record_step(7, 0, owner=owner, execution_result="success", last_completed_step=0)
    store.record_step(7, 1, owner=owner, execution_result="success", last_completed_step=1)
    assert store.release_task(7, owner, completed=True) == "released"
    assert checkpoint_row(dsn, 7) is None
    assert [row["step_number"] for row in step_rows(dsn, 7)] == [0, 1]
    # sent again (its answer lost): the same answer, and the attempt stays finished
    assert store.release_task(7, owner, completed=True) == "released"
    assert query(dsn, "SELECT outcome FROM jr_task_attempts WHERE task_id = 7") == [("finished",)]


def test_release_unfinished_keeps_the_attempts_and_drops_the_owner(store, dsn):
    owner = store.begin_task(7, 2).owner
    store.record_step(7, 0, owner=owner, execution_result="success", last_completed_step=0)
    assert store.release_task(7, owner, completed=False) == "kept"
    row = checkpoint_row(dsn, 7)
    assert (row["last_completed_step"], row["total_steps"]) == (0, 2)
    assert row["checkpoint_data"] == {"attempts": 1, "fence": 1}
    with pytest.raises(TaskOwnershipLost):  # a released task is nobody's
        store.record_step(7, 1, owner=owner, execution_result="success")
    with stores(dsn, {}) as (other,):
        assert other.begin_task(7, wait=0).attempt == 2  # free for the next worker at once


def test_a_release_by_a_former_owner_changes_nothing(store, dsn):
    old = store.begin_task(7).owner
    store.release_task(7, old, completed=False)
    new = store.begin_task(7).owner
    before = checkpoint_row(dsn, 7)
    assert store.release_task(7, old, completed=True) == "kept"  # its own release, sent again
    assert store.release_task(7, old, completed=False) == "kept"
    assert checkpoint_row(dsn, 7) == before
    assert before["checkpoint_data"]["owner"] == new


def test_forget_task_removes_both(store, dsn):
    record_row(store, 7, 0, execution_result="success")
    record_row(store, 7, 1, execution_result="error")
    record_row(store, 8, 0, execution_result="success")
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
    owner = store.begin_task(11).owner
    for number, value in enumerate(HOSTILE):
        store.record_step(11, number, owner=owner, execution_result="failed", step_type=value,
                          target_file=value, content_hash=content_hash({"path": value}),
                          error_detail=value)
    rows = step_rows(dsn, 11)
    assert len(rows) == len(HOSTILE)
    for row, value in zip(rows, HOSTILE, strict=True):
        assert row["target_file"] == expected_text(value)
        assert row["error_detail"] == expected_text(value)
        assert row["step_type"] == fit(expected_text(value), 50)  # cut to VARCHAR(50), marked
        assert row["step_content_hash"] == content_hash({"path": value})
    huge = rows[-1]["error_detail"]
    assert len(huge.encode()) == MAX_TEXT_BYTES and huge.endswith(SUFFIX)
    assert rows[5]["error_detail"] == "nul\\x00inside\\x00"
    assert table_counts(dsn) == (len(HOSTILE), 1)
    assert schema.check(resolve(dsn)).problems == []  # both tables intact


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_values_round_trip_whatever_standard_conforming_strings_says(dsn, conforming):
    # Plain values are written into the statement's text, the rest bound: with backslashes
    # taken literally or as escapes, every value comes back exactly as it went in.
    values = ["plain/file_1.py", "semi;colon -- dash", "it's", "back\\slash", "100%", "tab\tin",
              "ünïcödé", "a" * 50, "%(task_id)s", "'); DROP TABLE jr_step_rewards; --"]
    session = psycopg2.extensions.make_dsn(dsn, options=f"-c standard_conforming_strings={conforming}")
    ledger = CheckpointStore(session)
    try:
        owner = ledger.begin_task(12).owner
        for number, value in enumerate(values):
            ledger.record_step(12, number, owner=owner, execution_result="failed", step_type=value,
                               target_file=value, error_detail=value)
    finally:
        ledger.close()
    rows = step_rows(dsn, 12)
    assert [(r["step_type"], r["target_file"], r["error_detail"]) for r in rows] == [
        (value, value, value) for value in values]


def test_a_long_step_type_is_cut_to_fifty_characters(store, dsn):
    record_row(store, 7, 0, execution_result="success", step_type="t" * 200)
    assert step_rows(dsn, 7)[0]["step_type"] == "t" * 42 + "...[cut]"


def test_a_non_utf8_file_name_is_stored(store, dsn):
    name = b"caf\xe9.py".decode("utf-8", "surrogateescape")  # what os.listdir gives for latin-1 names
    record_row(store, 7, 0, execution_result="success", target_file=name)
    assert step_rows(dsn, 7)[0]["target_file"] == "caf?.py"


def test_values_sql_cannot_hold_are_refused_cleanly(store, dsn):
    owner = store.begin_task(7).owner
    with pytest.raises(StoreError):
        store.record_step(INJECTION, 0, owner=owner, execution_result="success")  # an INTEGER
    with pytest.raises(StoreError):
        store.record_step(7, 0, owner=owner, execution_result="x" * 21)  # VARCHAR(20)
    for call in (lambda: store.record_step(2**31, 0, owner=owner, execution_result="success"),
                 lambda: store.record_step(7, -2**31 - 1, owner=owner, execution_result="success"),
                 lambda: store.begin_task(2**31)):  # past INTEGER: a value error, not "run migrate"
        with pytest.raises(StoreError, match="out of range for type integer") as info:
            call()
        assert type(info.value) is StoreError
    with pytest.raises(StoreError, match='invalid input syntax for type integer: "7.5"') as info:
        store.record_step(7.5, 0, owner=owner, execution_result="success")  # never task 8
    assert type(info.value) is StoreError
    with pytest.raises(StoreError):
        store.record_step(7, 0, owner=owner, execution_result="success", content_hash="\x00")
    assert store.save_checkpoint(7, 0, checkpoint_data={"x": "\x00"}) is False  # jsonb refuses \u0000
    assert table_counts(dsn) == (0, 1)
    store.record_step(7, 0, owner=owner, execution_result="success")
    assert table_counts(dsn) == (1, 1)


# -- who runs a task -----------------------------------------------------------------------------


def test_two_stores_exclude_each_other_on_a_task(dsn):
    with stores(dsn, {}, {}) as (a, b):
        mine = a.begin_task(7)
        assert mine is not None
        assert b.begin_task(7) is None
        assert b.begin_task(7, wait=0.1) is None
        assert b.begin_task(8) is not None  # another task is free
        assert a.begin_task(7) is None  # the same store is no exception: each call is a new owner
        a.release_task(7, mine.owner, completed=False)
        theirs = b.begin_task(7)
        assert theirs is not None
        assert (theirs.attempt, theirs.checkpoint["checkpoint_data"]["fence"]) == (2, 2)
        with pytest.raises(TaskOwnershipLost):
            a.record_step(7, 0, owner=mine.owner, execution_result="success")
        assert step_rows(dsn, 7) == []


def test_an_expired_lease_is_taken_and_its_former_owner_writes_nothing(dsn):
    with stores(dsn, {"lease": 0.5}, {}) as (a, b):
        first = a.begin_task(7)  # and never renewed: no hold()
        a.record_step(7, 0, owner=first.owner, execution_result="success", last_completed_step=0)
        expiry = lease_data(dsn, 7)["lease_until"]
        second = b.begin_task(7, wait=None)  # polls until the lease has expired
        data = second.checkpoint["checkpoint_data"]
        assert data["lease_until"] - b.lease >= expiry  # taken only once the lease had run out
        assert (second.attempt, data["fence"], data["owner"]) == (2, 2, second.owner)
        assert second.steps == {0: StepRecord(0, "success", None, "unknown", "")}
        before = (step_rows(dsn, 7), checkpoint_row(dsn, 7))
        with pytest.raises(TaskOwnershipLost, match="another worker took it over"):
            a.record_step(7, 1, owner=first.owner, execution_result="failed", last_completed_step=1)
        assert a.release_task(7, first.owner, completed=True) == "lost"
        assert a.renew(7, first.owner) is False
        assert (step_rows(dsn, 7), checkpoint_row(dsn, 7)) == before  # it wrote nothing
        b.record_step(7, 1, owner=second.owner, execution_result="success", last_completed_step=1)
        assert b.release_task(7, second.owner, completed=True) == "released"


def test_the_keeper_renews_a_held_lease(dsn):
    with stores(dsn, {"lease": 0.6}, {}) as (a, b):
        state = a.begin_task(7)
        a.hold(7, state.owner)
        seen = [lease_data(dsn, 7)["lease_until"]]
        end = seen[0] + 0.9  # 1.5 s after the task was taken: past its first lease

        def renewed_past_the_first_lease():
            now, until = query(dsn, "SELECT extract(epoch FROM clock_timestamp()), "
                                    "(checkpoint_data ->> 'lease_until')::float "
                                    "FROM jr_task_checkpoints WHERE task_id = 7")[0]
            assert until >= seen[-1]
            if until > seen[-1]:
                seen.append(until)
            return float(now) > end and until > end

        wait_until(renewed_past_the_first_lease, 20,
                   "the keeper to renew the lease past 1.5 s after it was taken")
        assert len(seen) >= 4  # renewed every lease/3, not once
        assert b.begin_task(7, wait=0) is None
        assert a.lost(7, state.owner) is False
        a.record_step(7, 0, owner=state.owner, execution_result="success")


def test_the_keeper_notices_a_lease_taken_away(dsn):
    with stores(dsn, {"lease": 0.3}) as (a,):
        state = a.begin_task(7)
        a.hold(7, state.owner)
        query(dsn, "UPDATE jr_task_checkpoints SET checkpoint_data = checkpoint_data || "
                   """'{"owner": "someone else"}' WHERE task_id = 7""")

        wait_until(lambda: a.lost(7, state.owner), 20, "the keeper to mark the lease lost")
        assert lease_data(dsn, 7)["owner"] == "someone else"


# -- a holder that died --------------------------------------------------------------------------

HOLDER = """\
import sys, time
from jr_checkpoint.store import CheckpointStore
state = CheckpointStore(sys.argv[1]).begin_task(int(sys.argv[2]))
print("READY", state.owner, flush=True)
time.sleep(600)
"""


def killed_holder(dsn: str, task_id: int) -> tuple[int, str]:
    """A real worker process takes the task, says so, and is killed with SIGKILL; its pid and owner."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, dsn, str(task_id)],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()  # the handshake: it holds the lease now
        assert line.startswith("READY "), line
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return child.pid, line.split()[1]


def test_a_crashed_holder_on_this_host_is_taken_over_at_once(store, dsn):
    pid, owner = killed_holder(dsn, 7)
    data = lease_data(dsn, 7)
    assert (data["owner"], data["holder"]["pid"]) == (owner, pid)
    assert data["holder"]["host"] == socket.gethostname()
    assert data["lease_until"] > server_now(dsn) + 5  # a 30 s lease, far from over
    state = store.begin_task(7, wait=0)
    assert state is not None
    assert (state.attempt, state.checkpoint["checkpoint_data"]["fence"]) == (2, 2)
    assert lease_data(dsn, 7)["owner"] == state.owner


def test_a_crashed_holder_on_another_host_keeps_the_task_until_its_lease_ends(store, dsn):
    pid, owner = killed_holder(dsn, 7)
    # On another host its death cannot be seen: only its lease (here 3 s from now) ends it.
    query(dsn, "UPDATE jr_task_checkpoints SET checkpoint_data = checkpoint_data "
               "|| jsonb_build_object('lease_until', extract(epoch FROM clock_timestamp()) + 3) "
               "|| jsonb_build_object('holder', (checkpoint_data -> 'holder') "
               """|| '{"host": "elsewhere"}') WHERE task_id = 7""")
    expiry = lease_data(dsn, 7)["lease_until"]
    assert store.begin_task(7, wait=0) is None
    state = store.begin_task(7, wait=None)
    data = state.checkpoint["checkpoint_data"]
    assert data["lease_until"] - store.lease >= expiry
    assert (state.attempt, data["fence"]) == (2, 2)


# -- an answer lost after the server committed: the resend must not change the outcome ----------


class LostAnswers:
    """The store's connections get a cursor whose answers listed as lost (True, in order of the
    statements sent) never arrive, although the server ran and committed the statement.

    Set on the driver (psycopg2.connect), for the connections a store opens: those name
    themselves ``jr-checkpoint pid N`` in pg_stat_activity; the tests' own (``query``) do not."""

    def __init__(self, monkeypatch, lost: list[bool]):
        lost, connect = list(lost), psycopg2.connect

        class Cursor(psycopg2.extensions.cursor):
            def execute(self, sql, params=None):
                super().execute(sql, params)
                if lost and lost.pop(0):
                    raise psycopg2.OperationalError("server closed the connection unexpectedly")

        def connect_losing(*args, **kwargs):
            if str(kwargs.get("application_name", "")).startswith("jr-checkpoint pid "):
                kwargs["cursor_factory"] = Cursor
            return connect(*args, **kwargs)

        monkeypatch.setattr(psycopg2, "connect", connect_losing)


def test_begin_task_resent_after_a_lost_answer_counts_the_attempt_once(store, dsn, monkeypatch):
    LostAnswers(monkeypatch, [True])
    state = store.begin_task(7)
    assert state is not None
    assert store.round_trips == 2  # sent, lost, sent again
    data = lease_data(dsn, 7)
    assert (state.attempt, data["attempts"], data["fence"], data["owner"]) == (1, 1, 1, state.owner)


def test_a_takeover_resent_after_a_lost_answer_still_takes_the_task(store, dsn, monkeypatch):
    killed_holder(dsn, 7)
    LostAnswers(monkeypatch, [False, True])  # the holder is seen dead; the takeover's answer is lost
    state = store.begin_task(7, wait=0)
    assert state is not None  # not "someone holds it": that someone is this very call
    assert store.round_trips == 3
    data = lease_data(dsn, 7)
    assert (state.attempt, data["attempts"], data["fence"], data["owner"]) == (2, 2, 2, state.owner)


def test_a_last_step_resent_after_a_lost_answer_is_still_recorded_and_the_task_finished(store, dsn,
                                                                                       monkeypatch):
    LostAnswers(monkeypatch, [False, True])  # the last step's answer is lost: the server recorded
    state = store.begin_task(7, 1)            # the step, ended the attempt and released the task
    end = store_module.AttemptEnd("finished", None, (0,))
    store.record_step(7, 0, owner=state.owner, execution_result="success", last_completed_step=0,
                      end=end)  # sent again: its own work, found done, not "the task was taken"
    assert store.round_trips == 3  # begin, the last step, the same again
    assert checkpoint_row(dsn, 7) is None
    assert query(dsn, "SELECT outcome, ran FROM jr_task_attempts WHERE task_id = 7") == [("finished", [0])]


# -- connections ---------------------------------------------------------------------------------


def terminate(dsn: str, pid: int) -> None:
    assert query(dsn, "SELECT pg_terminate_backend(%s, 5000)", (pid,)) == [(True,)]


def test_a_record_after_the_server_dropped_the_connection_succeeds(store, dsn):
    owner = store.begin_task(7).owner
    store.record_step(7, 0, owner=owner, execution_result="success")
    old_pid = store.connector.backend_pid
    terminate(dsn, old_pid)
    store.record_step(7, 1, owner=owner, execution_result="success", last_completed_step=1)
    assert store.connector.backend_pid != old_pid
    assert [row["step_number"] for row in step_rows(dsn, 7)] == [0, 1]
    assert checkpoint_row(dsn, 7)["last_completed_step"] == 1
    assert lease_data(dsn, 7)["owner"] == owner  # the lease outlived the session: still ours
    with stores(dsn, {}) as (other,):
        assert other.begin_task(7, wait=0) is None
    assert store.release_task(7, owner, completed=True) == "released"


def test_two_threads_share_one_store(store, dsn):
    barrier = threading.Barrier(2)
    errors = []
    owner = store.begin_task(21).owner

    def work(offset):
        try:
            barrier.wait()
            for number in range(offset, offset + 100):
                store.record_step(21, number, owner=owner, execution_result="success",
                                  last_completed_step=number)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in (0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [row["step_number"] for row in step_rows(dsn, 21)] == list(range(200))
    assert store.round_trips == 201
    assert table_counts(dsn) == (200, 1)


def test_schema_missing_says_run_migrate(empty_dsn):
    store = CheckpointStore(named(empty_dsn, "the store"))
    where = resolve(empty_dsn).describe()
    try:
        for call, missing in ((lambda: store.record_step(7, 0, owner="x", execution_result="success"),
                               "functions"),
                              (lambda: store.begin_task(7), "functions"),
                              (lambda: store.load_task(7), "tables"),
                              (lambda: store.forget_task(7), "tables")):
            with pytest.raises(SchemaMissing) as info:
                call()
            assert str(info.value) == (f"the checkpoint {missing} do not exist at {where}: "
                                       "run `jr-checkpoint migrate`")
        pid = store.connector.backend_pid
        schema.create_tables(resolve(empty_dsn))
        record_row(store, 7, 0, execution_result="success")  # same session: nothing left aborted
        assert store.connector.backend_pid == pid
    finally:
        store.close()


DROP_V2 = ("DROP FUNCTION jr_checkpoint_begin_v2; DROP FUNCTION jr_checkpoint_record_step_v2; "
           "DROP FUNCTION jr_checkpoint_end_v2; DROP FUNCTION jr_checkpoint_renew_v2; "
           "DROP FUNCTION jr_checkpoint_note_unchecked_v2; DROP TABLE jr_task_attempts")


def test_before_migrate_a_worker_keeps_working_with_the_previous_releases_functions(dsn, caplog):
    # A rolling upgrade where the workers restart before `migrate` runs: the database has only
    # the previous release's functions (and no attempt ledger).
    query(dsn, DROP_V2)
    query(dsn, (Path(__file__).parents[1] / "data" / "functions_v1.sql").read_text())
    with stores(dsn, {}, {}) as (a, b):
        a.leases.RECHECK_SCHEMA = 0.0  # look for this release's functions at every task
        first = a.begin_task(7, 2)
        assert "[CHECKPOINT] the database has only the previous release's checkpoint functions: run " \
               "`jr-checkpoint migrate`; working with them until then" in caplog.text
        a.record_step(7, 0, owner=first.owner, execution_result="success", last_completed_step=0)
        assert b.begin_task(7, wait=0) is None  # the lease holds as the previous release's did
        assert a.renew(7, first.owner) is True
        end = store_module.AttemptEnd("finished", None, (0, 1))
        a.record_step(7, 1, owner=first.owner, execution_result="success", last_completed_step=1,
                      end=end)  # the last step: recorded, then released with its own call
        assert checkpoint_row(dsn, 7) is None
        assert [row["execution_result"] for row in step_rows(dsn, 7)] == ["success", "success"]
        schema.create_tables(resolve(dsn))  # `migrate` runs: the next task uses this release's
        second = a.begin_task(8)
        assert second.number == 1
        assert query(dsn, "SELECT task_id, attempt FROM jr_task_attempts") == [(8, 1)]


def test_tables_without_the_functions_say_run_migrate(store, dsn):
    query(dsn, DROP_V2)
    where = resolve(dsn).describe()
    message = f"the checkpoint functions do not exist at {where}: run `jr-checkpoint migrate`"
    with pytest.raises(SchemaMissing) as info:
        store.begin_task(7)
    assert str(info.value) == message
    with pytest.raises(SchemaMissing) as info:
        store.record_step(7, 0, owner="x", execution_result="success")
    assert str(info.value) == message
    assert store.load_task(7) is None  # the tables are there
    schema.create_tables(resolve(dsn))
    record_row(store, 7, 0, execution_result="success")


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
    # A row the seed's trio wrote (checkpoint_data NULL) is taken like any other.
    state = store.begin_task(6)
    assert (state.attempt, state.checkpoint["last_completed_step"]) == (1, 0)


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


def host_seed_call(store, host_call: str, task_id: int, total_steps: int) -> None:
    """The host's own seed method on a task a worker runs: save_checkpoint() replaces the row's
    checkpoint_data (the lease in it), cleanup_checkpoints() deletes the row."""
    if host_call == "save_checkpoint":
        assert store.save_checkpoint(task_id, 0, total_steps, {"note": "the host's own"})
    else:
        assert store.cleanup_checkpoints(task_id)


@pytest.mark.parametrize("host_call", ["save_checkpoint", "cleanup_checkpoints"])
def test_the_host_seed_methods_mid_task_do_not_take_the_task_from_its_worker(store, dsn, host_call):
    """The seed's save_checkpoint() replaces checkpoint_data and cleanup_checkpoints() deletes
    the row: nobody took the task, so its worker keeps recording and keeps it."""
    owner = store.begin_task(41, 3).owner
    store.record_step(41, 0, owner=owner, execution_result="success", last_completed_step=0)
    host_seed_call(store, host_call, 41, 3)
    assert store.renew(41, owner) is True
    store.record_step(41, 1, owner=owner, execution_result="success", last_completed_step=1)
    other = CheckpointStore(dsn)
    try:
        assert other.begin_task(41, wait=0) is None  # still held, by its worker
    finally:
        other.close()
    assert store.release_task(41, owner, completed=True)
    assert query(dsn, "SELECT step_number FROM jr_step_rewards WHERE task_id = 41 ORDER BY 1") == [(0,), (1,)]


@pytest.mark.parametrize("host_call", ["save_checkpoint", "cleanup_checkpoints"])
def test_the_host_seed_methods_before_the_last_step_still_let_it_finish_the_task(store, dsn, host_call):
    """The last step's record ends the attempt; the host's own helpers just removed our lease
    from the row (or the row): the record takes it back, and the task ends finished."""
    owner = store.begin_task(43, 2).owner
    store.record_step(43, 0, owner=owner, execution_result="success", last_completed_step=0)
    host_seed_call(store, host_call, 43, 2)
    store.record_step(43, 1, owner=owner, execution_result="success", last_completed_step=1,
                      end=store_module.AttemptEnd("finished", None, (0, 1)))
    assert checkpoint_row(dsn, 43) is None
    attempts = query(dsn, "SELECT outcome, ran FROM jr_task_attempts WHERE task_id = 43")
    assert attempts == [("finished", [0, 1])]
    assert query(dsn, "SELECT step_number FROM jr_step_rewards WHERE task_id = 43 ORDER BY 1") == [(0,), (1,)]


def test_a_stale_owners_last_step_writes_nothing_and_ends_nothing(store, dsn):
    first = CheckpointStore(dsn, lease=0.2)
    try:
        owner = first.begin_task(44, 1).owner
        state = store.begin_task(44, wait=10)  # once the first lease expires (it is never renewed)
        assert state is not None
        with pytest.raises(TaskOwnershipLost):
            first.record_step(44, 0, owner=owner, execution_result="success",
                              end=store_module.AttemptEnd("finished", None, (0,)))
    finally:
        first.close()
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE task_id = 44") == [(0,)]
    assert lease_data(dsn, 44)["owner"] == state.owner  # still the new owner's
    assert query(dsn, "SELECT attempt, outcome FROM jr_task_attempts WHERE task_id = 44 ORDER BY 1") == [
        (1, "died"), (2, "running")]


def test_a_task_another_worker_released_stays_lost(store, dsn):
    first = CheckpointStore(dsn, lease=0.2)
    try:
        owner = first.begin_task(42, 2).owner
        state = store.begin_task(42, wait=10)  # once the first lease expires (it is never renewed)
        assert state is not None
        store.release_task(42, state.owner, completed=False)
        with pytest.raises(TaskOwnershipLost):
            first.record_step(42, 0, owner=owner, execution_result="success")
        assert first.renew(42, owner) is False
    finally:
        first.close()
    assert query(dsn, "SELECT count(*) FROM jr_step_rewards WHERE task_id = 42") == [(0,)]


# -- an unchecked call's note and a begin, at the same moment: one attempt number each ----------

def _waiting_on_a_lock(dsn: str, pid: int) -> bool:
    return bool(query(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                      (pid,)))


def _in_open_transaction(dsn: str, sql: str, params: tuple):
    """``sql`` run in a transaction left open: (the connection, its answer)."""
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return conn, cur.fetchone()[0]


def _in_thread(dsn: str, sql: str, params: tuple):
    """``sql`` on its own connection in a thread: (the thread, its backend pid, its answer box)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    pid = conn.get_backend_pid()
    answer: list = []

    def run():
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                answer.append(cur.fetchone()[0])
        except Exception as exc:
            answer.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, pid, answer


BEGIN_SQL = "SELECT jr_checkpoint_begin_v2(%s, 2, %s, 30, '{}'::jsonb, NULL)"
NOTE_SQL = "SELECT jr_checkpoint_note_unchecked_v2(%s, '{}'::jsonb, '{0}', '{}')"


def test_a_begin_racing_the_note_of_an_unchecked_call_takes_the_next_attempt_number(dsn):
    """The note's attempt row is not committed yet when the begin reads the attempts: both
    want attempt 1. The begin waits for it, then takes attempt 2 (not a key violation, which
    would leave the task to run unchecked, every step again)."""
    note, number = _in_open_transaction(dsn, NOTE_SQL, (61,))
    assert number == 1
    thread, pid, answer = _in_thread(dsn, BEGIN_SQL, (61, "b" * 32))
    try:
        wait_until(lambda: _waiting_on_a_lock(dsn, pid), 10, "the begin to wait for the note's row")
        note.commit()
    finally:
        note.close()
        thread.join(timeout=30)
    assert not isinstance(answer[0], Exception), answer[0]
    assert (answer[0]["taken"], answer[0]["attempt"]) == (True, 2)
    assert query(dsn, "SELECT attempt, outcome FROM jr_task_attempts WHERE task_id = 61 ORDER BY 1") == [
        (1, "unchecked"), (2, "running")]


def test_the_note_of_an_unchecked_call_racing_a_begin_takes_the_next_attempt_number(dsn):
    begin, answer = _in_open_transaction(dsn, BEGIN_SQL, (62, "a" * 32))
    assert (answer["taken"], answer["attempt"]) == (True, 1)
    thread, pid, noted = _in_thread(dsn, NOTE_SQL, (62,))
    try:
        wait_until(lambda: _waiting_on_a_lock(dsn, pid), 10, "the note to wait for the begin's row")
        begin.commit()
    finally:
        begin.close()
        thread.join(timeout=30)
    assert noted == [2]
    assert query(dsn, "SELECT attempt, outcome FROM jr_task_attempts WHERE task_id = 62 ORDER BY 1") == [
        (1, "running"), (2, "unchecked")]
