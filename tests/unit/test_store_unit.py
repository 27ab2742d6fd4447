"""The ledger's logic and fault paths, without a server: a scripted fake connection."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading

import psycopg2
import psycopg2.errors
import pytest

from jr_checkpoint import db
from jr_checkpoint import dsn as dsn_module
from jr_checkpoint import lease as lease_module
from jr_checkpoint import store as store_module
from jr_checkpoint.errors import (
    DatabaseUnavailable,
    SchemaMissing,
    StoreError,
    TaskLockedError,
    TaskOwnershipLost,
)
from jr_checkpoint.lease import holder_identity, holder_is_dead
from jr_checkpoint.shape import SEED
from jr_checkpoint.sql import QUERIES
from jr_checkpoint.store import (
    MAX_TEXT_BYTES,
    CheckpointStore,
    StepRecord,
    TaskState,
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
        """Plays the next outcome of the script: a row, an int (a rowcount), an error or a Drop.
        With the script used up, the answer is ``(True,)`` (a recorded step), rowcount 1."""
        if self.conn.closed:
            raise psycopg2.InterfaceError("connection already closed")
        with self.conn.sent:
            self.conn.executed.append((sql, params))
            self.conn.sent.notify_all()
        outcome = self.conn.script.pop(0) if self.conn.script else (True,)
        if isinstance(outcome, Drop):
            self.conn.closed = 2
            raise outcome.exc
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, int):
            self.row, self.rowcount = None, outcome
        else:
            self.row, self.rowcount = outcome, 1

    def fetchone(self):
        return self.row

    def fetchall(self):
        return self.row


class FakeConnection:
    def __init__(self, *script):
        self.script = list(script)
        self.executed: list[tuple[str, object]] = []
        self.sent = threading.Condition()
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
        """The named query behind each statement sent."""
        by_text = {text: name for name, text in QUERIES.items()}
        return ["record_step" if sql in RECORD_TEXTS else by_text.get(sql, sql)
                for sql, _ in self.executed]

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """A handshake: returns once ``count`` statements were sent (another thread sends them)."""
        with self.sent:
            assert self.sent.wait_for(lambda: len(self.executed) >= count, timeout), self.names


#: The per-step statements: every value bound, none written into the text.
RECORD_TEXTS = (QUERIES["record_step_checked"], QUERIES["record_step_checked_end"])


def sent_values(sql: str, params) -> list:
    """The arguments of one record_step call as the server gets them, in order."""
    assert sql in RECORD_TEXTS and sql.count("%s") == len(params)
    return list(params)


DSN = "host=db.invalid port=6000 dbname=ledger password=s3cret-pw"
WHERE = "host=db.invalid port=6000 dbname=ledger"


class FakeTime:
    """The store's injectable clock and sleep: sleeping moves the clock, nothing really waits."""

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


@pytest.fixture
def connect(mocker):
    """db.connect, replaced: give it connections with ``connect.side_effect = [...]``."""
    return mocker.patch.object(db, "connect", autospec=True)


def make_store(fake_time=None, **options):
    if fake_time is not None:
        options.update(sleep=fake_time.sleep, clock=fake_time.clock)
    else:
        options.update(sleep=refuse_to_sleep)
    options.setdefault("shape", SEED)  # the tables are the seed's: no live_shape query
    return CheckpointStore(DSN, **options)


def refuse_to_sleep(seconds):
    raise AssertionError(f"the store slept {seconds} s")


def record(store, step_number=0, **kwargs):
    kwargs.setdefault("execution_result", "success")
    kwargs.setdefault("owner", "me")
    store.record_step(7, step_number, **kwargs)


def coded(cls: type[psycopg2.Error], pgcode: str, message: str) -> psycopg2.Error:
    """A psycopg2 error as the server sends it, with its SQLSTATE (Python-made ones have none)."""
    return type(cls.__name__, (cls,), {"pgcode": pgcode})(message)


def dropped():
    return Drop(psycopg2.OperationalError("server closed the connection unexpectedly"))


# -- the connection ----------------------------------------------------------------------------


def test_constructing_a_store_touches_nothing(connect, mocker):
    resolve = mocker.spy(dsn_module, "resolve")
    store = CheckpointStore(DSN)
    assert connect.call_count == 0
    assert resolve.call_count == 0
    assert store.connected is False
    assert not store.leases.keeping  # no thread either


@pytest.mark.parametrize("options", [{"lease": 0}, {"lease": -1}, {"outage": -0.1}])
def test_a_lease_or_outage_out_of_range_is_refused(options):
    with pytest.raises(ValueError, match="lease must be > 0 and outage >= 0"):
        CheckpointStore(DSN, **options)


def test_connection_is_lazy_autocommit_and_reused(connect):
    conn = FakeConnection()
    connect.side_effect = [conn]
    store = make_store(connect_timeout=3)
    record(store, 0)
    assert store.connected is True
    record(store, 1)
    assert connect.call_count == 1
    assert connect.call_args.args[1] == 3  # the store's connect_timeout reaches libpq
    assert conn.autocommit is True
    assert conn.names == ["record_step", "record_step"]
    assert store.round_trips == 2


def test_record_step_is_one_statement_with_bounded_values(connect):
    conn = FakeConnection()
    connect.side_effect = [conn]
    store = make_store(lease=12.5)
    store.record_step(7, 3, owner="me", execution_result="error", step_type="t" * 200,
                      target_file="a\x00b", content_hash="h" * 64, execution_time_ms=-5,
                      error_detail="e" * 100_000, last_completed_step=2, total_steps=9)
    store.record_step(7, 4, owner="me", execution_result="success", execution_time_ms=2**40)
    (sql, params), (second_sql, second_params) = conn.executed
    assert conn.names == ["record_step", "record_step"]
    assert sent_values(sql, params) == [
        7, "me", 3, "t" * 42 + "...[cut]", "a\\x00b", "h" * 64, "error", 0,  # cut to 50, marked
        "e" * (MAX_TEXT_BYTES - len(SUFFIX)) + SUFFIX, 2, 9, 12.5]
    assert sent_values(second_sql, second_params) == [
        7, "me", 4, "unknown", "", None, "success", 2**31 - 1, None, -1, None, 12.5]
    assert store.round_trips == 2


def test_a_value_with_anything_to_escape_is_a_parameter_never_text(connect):
    conn = FakeConnection()
    connect.side_effect = [conn]
    store = make_store()
    hostile = ["it's", "back\\slash", "100%", "%s", "line\nbreak", "é", "tab\t"]
    for number, value in enumerate(hostile):
        record(store, number, step_type=value, target_file=value, error_detail=value)
    for (sql, params), value in zip(conn.executed, hostile, strict=True):
        assert sql in RECORD_TEXTS  # the statement as it stands: no value written into it
        assert sent_values(sql, params)[3:5] == [value, value]
        assert sent_values(sql, params)[8] == value


def test_an_integer_sql_cannot_hold_goes_to_the_server_to_refuse(connect):
    conn = FakeConnection()
    connect.side_effect = [conn]
    store = make_store()
    for bad in (2**31, 7.5, True, "7"):
        store.record_step(bad, 0, owner="me", execution_result="success")
    for (sql, params), bad in zip(conn.executed, (2**31, 7.5, True, "7"), strict=True):
        assert sql == QUERIES["record_step"]  # the casts: the server says what is wrong
        assert params["task_id"] is bad


def test_a_step_type_longer_after_escaping_is_still_cut_to_fifty(connect):
    conn = FakeConnection()
    connect.side_effect = [conn]
    record(make_store(), 0, step_type="\x00" * 20)  # 20 characters, 80 once escaped
    assert sent_values(*conn.executed[0])[3] == "\\x00" * 10 + "\\x...[cut]"


def test_a_refused_record_is_task_ownership_lost_and_the_connection_goes_on(connect):
    conn = FakeConnection((False,), (True,))
    connect.side_effect = [conn]
    store = make_store()
    with pytest.raises(TaskOwnershipLost, match="^task 7: another worker took it over; stopping$") as info:
        record(store, 0)
    assert isinstance(info.value, TaskLockedError)
    record(store, 1)
    assert conn.names == ["record_step", "record_step"]
    assert conn.close_calls == 0


# -- begin_task --------------------------------------------------------------------------------

CHECKPOINT = {"last_completed_step": 1, "total_steps": 4,
              "checkpoint_data": {"attempts": 3, "owner": "x", "fence": 3, "lease_until": 1.0e9}}


def taken(checkpoint=CHECKPOINT, steps=None):
    return {"taken": True, "checkpoint": checkpoint, "steps": steps}


def not_taken(owner="other", **holder):
    holder = {"host": "elsewhere", "pid": 1, "proc": "boot:1", **holder}
    return {"taken": False, "holder": {"owner": owner, "holder": holder, "lease_until": 1.0e9},
            "now": 1.0e9 - 5}


def test_begin_task_is_one_call_and_parses_its_answer(connect):
    steps = [[0, "success", "h0", "write", "a.py"], [1, "failed", None, "bash", ""]]
    conn = FakeConnection((taken(steps=steps),))
    connect.side_effect = [conn]
    store = make_store(lease=9)
    state = store.begin_task(7, total_steps=4)
    assert conn.names == ["begin_task"]
    assert "SELECT jr_checkpoint_begin_v2(" in conn.executed[0][0]
    assert store.round_trips == 1
    params = conn.executed[0][1]
    assert set(params) == {"task_id", "total_steps", "owner", "lease", "holder", "takeover"}
    assert (params["task_id"], params["total_steps"], params["lease"]) == (7, 4, 9.0)
    assert len(params["owner"]) == 32 and int(params["owner"], 16) >= 0  # a random token
    assert params["takeover"] == params["owner"]  # nobody else's: a resend takes it again
    assert json.loads(params["holder"]) == {"host": socket.gethostname(), "pid": os.getpid(),
                                            "proc": lease_module.process_identity(os.getpid())}
    assert isinstance(state, TaskState)
    assert state.owner == params["owner"]
    assert state.attempt == 3
    assert state.checkpoint == CHECKPOINT
    assert state.steps == {0: StepRecord(0, "success", "h0", "write", "a.py"),
                           1: StepRecord(1, "failed", None, "bash", "")}


def test_each_begin_task_is_a_new_owner(connect):
    conn = FakeConnection((taken(),), (taken(),))
    connect.side_effect = [conn]
    store = make_store()
    assert store.begin_task(7).owner != store.begin_task(7).owner


@pytest.mark.parametrize("checkpoint", [
    {"last_completed_step": -1, "total_steps": None, "checkpoint_data": {"attempts": 1}},
    {"last_completed_step": -1, "total_steps": None, "checkpoint_data": {"attempts": "many"}},
    {"last_completed_step": -1, "total_steps": None, "checkpoint_data": None},
    None,
])
def test_a_first_attempt_without_steps(connect, checkpoint):
    connect.side_effect = [FakeConnection((taken(checkpoint=checkpoint),))]
    state = make_store().begin_task(7)
    assert (state.attempt, state.steps) == (1, {})


def test_begin_task_not_taken_is_none_after_one_try_by_default(connect):
    conn = FakeConnection((not_taken(),))
    connect.side_effect = [conn]
    assert make_store().begin_task(7) is None
    assert conn.names == ["begin_task"]


def polling_store(mocker, fake_time, answers, **options):
    store = make_store(fake_time, **options)
    run = mocker.patch.object(store.connector, "run", side_effect=[(a,) for a in answers])
    return store, run


def test_begin_task_gives_up_at_wait_without_real_waiting(mocker, fake_time):
    store, run = polling_store(mocker, fake_time, [not_taken()] * 50)
    assert store.begin_task(7, wait=1.0) is None
    assert fake_time.now == pytest.approx(101.0)
    assert sum(fake_time.sleeps) == pytest.approx(1.0)
    assert fake_time.sleeps[:5] == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.32])  # doubling
    assert max(fake_time.sleeps) <= 0.5
    assert run.call_count == len(fake_time.sleeps) + 1  # one last try at the deadline
    assert all(call.kwargs == {"patient": True} for call in run.call_args_list)
    owners = {call.args[1]["owner"] for call in run.call_args_list}
    assert len(owners) == 1  # one owner token for the whole wait


def test_begin_task_polls_until_taken(mocker, fake_time):
    store, run = polling_store(mocker, fake_time, [not_taken(), not_taken(), taken()])
    state = store.begin_task(7, wait=10)
    assert state.owner == run.call_args.args[1]["owner"]
    assert run.call_count == 3
    assert fake_time.sleeps == pytest.approx([0.02, 0.04])


def test_begin_task_with_wait_none_waits_as_long_as_it_takes(mocker, fake_time):
    store, run = polling_store(mocker, fake_time, [not_taken()] * 30 + [taken()])
    assert store.begin_task(7, wait=None) is not None
    assert run.call_count == 31
    assert fake_time.sleeps[-10:] == [0.5] * 10  # the pause stops growing at half a second
    assert fake_time.now > 110  # far past any default: it waited


# -- a holder whose process died ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process of this host that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert child.wait(timeout=30) == 0
    return child.pid


@pytest.fixture
def live_child():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    yield child
    child.stdin.close()
    child.wait(timeout=30)


def stale_identity(start="1"):
    """This boot and PID namespace, a start time no live process has."""
    return lease_module.process_identity(os.getpid()).rpartition(":")[0] + ":" + start


def test_a_holder_on_this_host_whose_process_is_gone_is_dead(dead_pid):
    assert holder_is_dead({"host": socket.gethostname(), "pid": dead_pid, "proc": stale_identity()})


def test_a_live_holder_on_this_host_is_not_dead(live_child):
    identity = lease_module.process_identity(live_child.pid)
    assert identity is not None
    assert not holder_is_dead({"host": socket.gethostname(), "pid": live_child.pid, "proc": identity})
    assert not holder_is_dead(holder_identity())  # this very process


def test_a_reused_pid_is_dead(live_child):
    # The pid is running, but it is another process than the one that took the lease.
    assert holder_is_dead({"host": socket.gethostname(), "pid": live_child.pid, "proc": stale_identity()})


@pytest.mark.parametrize("holder", [
    None, "garbage", {}, {"host": "elsewhere"},
    {"host": socket.gethostname(), "pid": "12", "proc": "boot:1"},
    {"host": socket.gethostname(), "pid": 12, "proc": None},
])
def test_a_holder_that_cannot_be_judged_is_not_dead(holder):
    assert not holder_is_dead(holder)


def test_a_holder_on_another_host_is_never_dead(dead_pid):
    assert not holder_is_dead({"host": "elsewhere", "pid": dead_pid, "proc": stale_identity()})


def test_the_identity_is_boot_namespace_and_start_time():
    boot, namespace, start = lease_module.process_identity(os.getpid()).split(":")
    with open("/proc/sys/kernel/random/boot_id") as handle:
        assert boot == handle.read().strip()
    assert namespace == str(os.stat("/proc/self/ns/pid").st_ino)
    assert int(start) > 0


@pytest.mark.parametrize("where", ["another boot", "another pid namespace", "an older version"])
def test_a_holder_sharing_only_the_host_name_is_never_dead(dead_pid, live_child, where):
    # Another machine with the same name, or a container on this host's UTS namespace: the
    # pid (dead here, or another process here) names nothing we can see.
    boot, namespace, start = lease_module.process_identity(live_child.pid).split(":")
    proc = {"another boot": f"00000000-0000-0000-0000-000000000000:{namespace}:{start}",
            "another pid namespace": f"{boot}:1:{start}",
            "an older version": f"{boot}:{start}"}[where]
    for pid in (dead_pid, live_child.pid):
        assert not holder_is_dead({"host": socket.gethostname(), "pid": pid, "proc": proc})


def test_an_owner_on_this_host_whose_process_died_is_taken_over_at_once(mocker, fake_time, dead_pid,
                                                                          caplog):
    dead = not_taken("dead-owner", host=socket.gethostname(), pid=dead_pid, proc=stale_identity())
    store, run = polling_store(mocker, fake_time, [dead, taken()])
    with caplog.at_level(logging.WARNING, logger="jr_checkpoint.lease"):
        state = store.begin_task(7, wait=0)
    assert state is not None
    first, second = (call.args[1] for call in run.call_args_list)
    assert first["takeover"] == first["owner"]
    assert second["takeover"] == "dead-owner"  # taken from exactly the owner seen dead
    assert second["owner"] == first["owner"] == state.owner
    assert fake_time.sleeps == []
    assert [(r.levelno, r.getMessage(), r.action) for r in caplog.records] == [
        (logging.WARNING, f"[CHECKPOINT] task 7: its owner (pid {dead_pid}) died; taking it over",
         "task_taken_over")]


def test_a_dead_owner_is_taken_over_once_not_in_a_loop(mocker, fake_time, dead_pid):
    # Another worker took it from the dead owner first (or the same dead owner answers again).
    dead = not_taken("dead-owner", host=socket.gethostname(), pid=dead_pid, proc=stale_identity())
    store, run = polling_store(mocker, fake_time, [dead, dead])
    assert store.begin_task(7, wait=0) is None
    assert run.call_count == 2


def test_a_live_owner_on_this_host_is_not_taken_over(mocker, fake_time):
    store, run = polling_store(mocker, fake_time, [not_taken(**holder_identity())])
    assert store.begin_task(7, wait=0) is None
    assert run.call_count == 1
    assert run.call_args.args[1]["takeover"] == run.call_args.args[1]["owner"]


def test_a_dead_pid_on_another_host_is_not_taken_over(mocker, fake_time, dead_pid):
    store, run = polling_store(mocker, fake_time,
                               [not_taken("remote", pid=dead_pid, proc=stale_identity())])
    assert store.begin_task(7, wait=0) is None
    assert run.call_count == 1


# -- a dropped connection: a worker's statement is patient -------------------------------------

LOST = [
    psycopg2.OperationalError("server closed the connection unexpectedly"),
    psycopg2.InterfaceError("connection already closed"),
    psycopg2.DatabaseError("could not receive data from server: Connection reset by peer"),
    coded(psycopg2.errors.AdminShutdown, "57P01",
          "terminating connection due to administrator command"),
]


@pytest.mark.parametrize("error", LOST, ids=lambda e: type(e).__name__)
def test_a_dropped_connection_is_reopened_and_the_statement_resent(connect, fake_time, error):
    first = FakeConnection((True,), Drop(error))
    second, third = FakeConnection(Drop(error)), FakeConnection()
    connect.side_effect = [first, second, third, AssertionError("a fourth connection")]
    store = make_store(fake_time)
    record(store, 0)
    record(store, 1, error_detail="boom")
    assert connect.call_count == 3
    assert first.names == ["record_step", "record_step"]
    assert second.names == third.names == ["record_step"]
    # The same statement, the same values (the same owner), each time.
    assert first.executed[1] == second.executed[0] == third.executed[0]
    assert (first.close_calls, second.close_calls, third.close_calls) == (1, 1, 0)
    assert third.autocommit is True
    assert store.connector.connection() is third
    assert store.round_trips == 4
    assert fake_time.sleeps == pytest.approx([0.05, 0.1])  # a backoff, on the injected clock


def test_begin_and_release_are_patient_too(connect, fake_time):
    first = FakeConnection(dropped())
    second = FakeConnection((taken(),), dropped())
    third = FakeConnection(("released",))
    connect.side_effect = [first, second, third]
    store = make_store(fake_time)
    state = store.begin_task(7)
    assert store.release_task(7, state.owner, completed=True) == "released"
    assert first.names == ["begin_task"]
    assert second.names == ["begin_task", "release_task"]
    assert third.names == ["release_task"]
    assert first.executed[0] == second.executed[0]
    assert len(fake_time.sleeps) == 2


def test_a_refused_reconnect_is_retried_while_patient(connect, fake_time):
    refused = DatabaseUnavailable(f"cannot connect to PostgreSQL at {WHERE}: refused")
    last = FakeConnection()
    connect.side_effect = [FakeConnection((True,), dropped()), refused, refused, last]
    store = make_store(fake_time)
    record(store, 0)
    record(store, 1)
    assert connect.call_count == 4
    assert last.names == ["record_step"]
    assert fake_time.sleeps == pytest.approx([0.05, 0.1, 0.2])


def test_a_patient_statement_gives_up_after_the_outage(connect, fake_time, caplog):
    connect.side_effect = lambda *args, **kwargs: FakeConnection(dropped())
    store = make_store(fake_time, outage=1.0)
    with caplog.at_level(logging.INFO, logger="jr_checkpoint.db"), \
            pytest.raises(DatabaseUnavailable) as info:
        record(store, 0)
    assert str(info.value) == (f"lost the connection to PostgreSQL at {WHERE}: "
                               "server closed the connection unexpectedly")
    assert isinstance(info.value.__cause__, psycopg2.OperationalError)
    assert fake_time.now == pytest.approx(101.0)  # exactly the outage, and never really waited
    assert fake_time.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.25])  # the last one cut short
    assert connect.call_count == store.round_trips == 6  # one last try at the deadline
    assert [r.action for r in caplog.records] == ["reconnecting"] * 5
    assert store.connected is False


def test_an_outage_of_zero_sends_once(connect, fake_time):
    connect.side_effect = [FakeConnection(dropped()), AssertionError("a second connection")]
    with pytest.raises(DatabaseUnavailable):
        record(make_store(fake_time, outage=0), 0)
    assert fake_time.sleeps == []


def test_a_database_that_never_answers_is_unavailable_after_the_outage(connect, fake_time):
    connect.side_effect = DatabaseUnavailable(f"cannot connect to PostgreSQL at {WHERE}: refused")
    with pytest.raises(DatabaseUnavailable, match="refused$"):
        make_store(fake_time, outage=2.0).begin_task(7, wait=None)
    assert fake_time.now == pytest.approx(102.0)


# -- a dropped connection: the command line's statements try once -----------------------------


def test_a_stale_connection_gets_one_fresh_try(connect):
    first = FakeConnection((None, None), dropped())
    second = FakeConnection((None, [{"step_number": 0}]))
    connect.side_effect = [first, second, AssertionError("a third connection")]
    store = make_store()
    assert store.load_task(7) is None
    assert store.load_task(7) == {"task_id": 7, "checkpoint": None, "steps": [{"step_number": 0}]}
    assert (first.names, second.names) == (["load_task", "load_task"], ["load_task"])
    assert first.executed[1] == second.executed[0]


def test_a_fresh_connection_that_drops_is_not_retried(connect):
    connect.side_effect = [FakeConnection(dropped()), AssertionError("a second connection")]
    with pytest.raises(DatabaseUnavailable):
        make_store().forget_task(7)
    assert connect.call_count == 1


def test_a_stale_connection_and_then_a_fresh_one_dropping_is_unavailable(connect):
    first = FakeConnection((0, 0), dropped())
    connect.side_effect = [first, FakeConnection(dropped()), AssertionError("a third connection")]
    store = make_store()
    assert store.forget_task(7) == (0, 0)
    with pytest.raises(DatabaseUnavailable) as info:
        store.forget_task(7)
    assert str(info.value) == (f"lost the connection to PostgreSQL at {WHERE}: "
                               "server closed the connection unexpectedly")
    assert connect.call_count == 2


def test_a_record_that_is_not_patient_tries_once(connect):
    connect.side_effect = [FakeConnection(dropped()), AssertionError("a second connection")]
    with pytest.raises(DatabaseUnavailable):
        record(make_store(), 0, patient=False)


# -- statement errors --------------------------------------------------------------------------


@pytest.mark.parametrize("error", [
    coded(psycopg2.DataError, "22P02", 'invalid input syntax for type integer: "x"'),
    coded(psycopg2.errors.UniqueViolation, "23505", "duplicate key value violates unique constraint"),
    coded(psycopg2.errors.StringDataRightTruncation, "22001",
          "value too long for type character varying(20)"),
    # An OperationalError with a SQLSTATE that is not about the connection.
    coded(psycopg2.errors.QueryCanceled, "57014", "canceling statement due to statement timeout"),
], ids=lambda e: e.pgcode)
def test_a_statement_error_is_store_error_and_the_connection_is_reused(connect, error):
    conn = FakeConnection(error, (True,))
    connect.side_effect = [conn, AssertionError("a second connection")]
    store = make_store()  # sleeping would fail the test: a statement error is never retried
    with pytest.raises(StoreError) as info:
        record(store, 0)
    assert type(info.value) is StoreError
    assert str(info.value) == f"record_step failed at {WHERE}: {error}"
    assert type(info.value.__cause__) is type(error)
    record(store, 1)  # autocommit: nothing was left aborted, the same connection goes on
    assert connect.call_count == 1
    assert conn.close_calls == 0
    assert conn.names == ["record_step", "record_step"]


def test_a_value_psycopg2_refuses_is_store_error(connect):
    error = ValueError("A string literal cannot contain NUL (0x00) characters.")
    conn = FakeConnection(error, (True,))
    connect.side_effect = [conn]
    store = make_store()
    with pytest.raises(StoreError) as info:
        record(store, 0, content_hash="\x00")
    assert type(info.value) is StoreError
    assert str(info.value) == f"record_step failed: {error}"
    record(store, 1)
    assert conn.close_calls == 0


@pytest.mark.parametrize(("error", "what"), [
    (psycopg2.errors.UndefinedTable('relation "jr_task_checkpoints" does not exist'), "tables"),
    (psycopg2.errors.UndefinedFunction("function jr_checkpoint_record_step(...) does not exist"),
     "functions"),
])
def test_a_missing_schema_is_schema_missing_and_not_retried(connect, error, what):
    connect.side_effect = [FakeConnection(error), AssertionError("a second connection")]
    with pytest.raises(SchemaMissing) as info:
        record(make_store(), 0)
    assert str(info.value) == f"the checkpoint {what} do not exist at {WHERE}: run `jr-checkpoint migrate`"


# -- release, renew, the keeper ----------------------------------------------------------------


@pytest.mark.parametrize(("answer", "completed"), [
    ("released", True), ("kept", True), ("kept", False), ("lost", False)])
def test_release_task_sends_the_owner_and_the_attempt_and_says_what_became_of_it(connect, answer, completed):
    conn = FakeConnection((answer,))
    connect.side_effect = [conn]
    end = store_module.AttemptEnd("finished" if completed else "failed", 3, (3, 4), (0, 1, 2), ())
    assert make_store().release_task(7, "me", completed=completed, end=end) == answer
    assert conn.names == ["release_task"]
    assert conn.executed[0][1] == {"task_id": 7, "owner": "me", "completed": completed, "exhausted": False,
                                   "outcome": end.outcome, "resumed_at": 3, "ran": [3, 4],
                                   "skipped": [0, 1, 2], "failed": []}


def test_renew_says_whether_the_owner_still_owns_the_task(connect):
    conn = FakeConnection(("kept",), ("lost",))
    connect.side_effect = [conn]
    store = make_store(lease=4)
    assert store.renew(7, "me") is True
    assert store.renew(7, "me") is False
    assert conn.names == ["renew_lease", "renew_lease"]
    assert conn.executed[0][1] == {"task_id": 7, "owner": "me", "lease": 4.0}


def test_the_keeper_renews_held_leases_and_marks_a_lost_one(connect):
    # Renewals every lease/3 = 0.01 s; two leases, renewed in the order they were taken.
    kept, lost = ("kept",), ("lost",)
    conn = FakeConnection(kept, kept, lost, kept, *[kept] * 1000)  # tick 2: a lost, b kept
    connect.side_effect = [conn]
    store = make_store(lease=0.03)
    try:
        store.hold(7, "a")
        store.hold(8, "b")
        conn.wait_for(4)
        conn.wait_for(5)  # tick 3 began after tick 2 ended: a's loss is recorded by now
        assert store.lost(7, "a") is True
        assert store.lost(8, "b") is False
        assert [p["owner"] for _, p in conn.executed[:5]] == ["a", "b", "a", "b", "b"]
        assert set(conn.names) == {"renew_lease"}
        store.forget_lease(8, "b")
        assert store.lost(8, "b") is False
        assert store.lost(9, "never held") is False
    finally:
        store.close()


def test_release_task_stops_renewing_the_lease(connect):
    conn = FakeConnection(("kept",))
    connect.side_effect = [conn]
    store = make_store()
    store.hold(7, "me")
    assert store.lease_until(7, "me") == float("inf")
    store.release_task(7, "me", completed=False)
    assert store.lease_until(7, "me") == float("-inf")
    store.close()


def test_close_stops_the_keeper_thread(connect):
    connect.side_effect = [FakeConnection()]
    store = make_store()
    before = threading.enumerate()
    store.hold(7, "me")
    (thread,) = [t for t in threading.enumerate() if t.name == "jr-checkpoint-lease" and t not in before]
    assert thread.is_alive()
    store.close()
    assert not thread.is_alive()  # joined, not left to run
    assert not store.leases.keeping
    assert connect.call_count == 0  # with a 30 s lease it never had to renew


# -- fork --------------------------------------------------------------------------------------


def test_a_forked_child_opens_its_own_connection_and_never_closes_the_parents(connect, mocker):
    parent, child = FakeConnection(), FakeConnection()
    connect.side_effect = [parent, child]
    store = make_store()
    store.hold(7, "me")
    record(store, 0)
    mocker.patch.object(os, "getpid", return_value=os.getpid() + 1)
    record(store, 1)
    assert connect.call_count == 2
    assert parent.close_calls == 0
    assert parent.closed == 0
    assert store.connector.orphans == [parent]
    assert store.connector.connection() is child
    assert not store.leases.keeping  # the parent's keeper and its leases are not the child's
    assert store.lease_until(7, "me") == float("-inf")
    assert child.names == ["record_step"]
    store.close()
    assert child.close_calls == 1
    assert parent.close_calls == 0


def test_close_in_a_forked_child_leaves_the_parents_connection_open(connect, mocker):
    parent = FakeConnection()
    connect.side_effect = [parent]
    store = make_store()
    record(store, 0)
    mocker.patch.object(os, "getpid", return_value=os.getpid() + 1)
    store.close()
    assert parent.close_calls == 0
    assert not store.connected


def test_close_closes_and_forgets(connect):
    first, second = FakeConnection(), FakeConnection()
    connect.side_effect = [first, second]
    store = make_store()
    record(store, 0)
    store.close()
    assert first.close_calls == 1
    assert store.connected is False
    record(store, 1)
    assert connect.call_count == 2


# -- the seed's trio ---------------------------------------------------------------------------


def test_seed_trio_sends_the_seeds_values(connect):
    conn = FakeConnection(1, 1, (3, 10, {"a": 1}), None, 1)
    connect.side_effect = [conn]
    store = make_store()
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


def test_seed_trio_gets_one_fresh_try_on_a_stale_connection(connect):
    first, second = FakeConnection(1, dropped()), FakeConnection(1)
    connect.side_effect = [first, second]
    store = make_store()
    assert store.save_checkpoint(5, 1) is True
    assert store.cleanup_checkpoints(5) is True
    assert second.names == ["cleanup_checkpoints"]


def test_seed_trio_answers_false_or_none_and_warns_when_the_database_is_down(connect, caplog):
    connect.side_effect = DatabaseUnavailable("cannot connect to PostgreSQL at host=db.invalid")
    store = make_store()  # and answers at once: never patient
    with caplog.at_level(logging.WARNING, logger="jr_checkpoint.queue_client"):
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
    assert connect.call_count == 3


def test_seed_trio_answers_false_or_none_on_a_query_error(connect, caplog):
    error = psycopg2.errors.UndefinedTable("relation does not exist")
    connect.side_effect = [FakeConnection(error, error, error)]
    store = make_store()
    assert store.save_checkpoint(5, 1) is False
    assert store.get_last_checkpoint(5) is None
    assert store.cleanup_checkpoints(5) is False
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3
    assert all("jr-checkpoint migrate" in r.getMessage() for r in caplog.records)
