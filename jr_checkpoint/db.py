"""The database boundary, and the only module that imports psycopg2: opening connections,
running statements (a worker's with retries across an outage), and translating psycopg2's
errors into the package's own, once (procrastinate's connector and ``wrap_exceptions`` are the
model). Everything above it (the ledger, the lease, the schema, the reports, the dashboard,
the launcher's checks) sends its SQL through here.

Nothing that leaves this module holds a password: a translated error is chained from a
redacted copy of psycopg2's error, and the original itself (which Python keeps as the new
error's ``__context__``) has its secrets masked in place.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql as pgsql

from .errors import ConfigurationError, DatabaseUnavailable, SchemaMissing, StoreError, TaskOwnershipLost
from .sql import QUERIES
from .text import first_line, redacted, scrub

logger = logging.getLogger(__name__)

#: Seconds libpq may take to connect, unless a caller or the DSN says otherwise.
DEFAULT_CONNECT_TIMEOUT = 5

#: A psycopg2 connection and cursor (the types callers hold; only this module imports psycopg2).
Connection = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor

#: What libpq refuses when it reads a DSN (:func:`parse_dsn`).
DsnSyntaxError = psycopg2.ProgrammingError

#: SQLSTATEs that mean the session is gone: class 08 (connection exception) and the
#: operator-intervention codes of a server shutting down or starting up.
_CONNECTION_LOST = ("08", "57P01", "57P02", "57P03")

#: SQLSTATEs of a server that cannot take the statement *now* but will again: class 53
#: (disk_full, out_of_memory, too_many_connections, ...), read_only_sql_transaction (a
#: standby, or a primary demoted by a failover: a new connection finds the new primary),
#: serialization_failure, deadlock_detected, lock_not_available (a lock_timeout). Each
#: statement is idempotent, so it is sent again like after a dropped connection.
_TRANSIENT = ("53", "25006", "40001", "40P01", "55P03")

#: Raised by jr_checkpoint_record_step_v2 when the task changed hands under the statement.
_LOST_TASK = "JRC01"


class Endpoint(Protocol):
    """Where to connect (:class:`jr_checkpoint.dsn.Target` is the one implementation)."""

    @property
    def params(self) -> dict[str, Any]: ...

    @property
    def source(self) -> str: ...

    def secrets(self) -> list[str]: ...

    def describe(self) -> str: ...


# -- DSN text ------------------------------------------------------------------------------------

def parse_dsn(text: str) -> dict[str, Any]:
    """libpq's reading of a DSN or URI; raises :data:`DsnSyntaxError` with libpq's words."""
    params: dict[str, Any] = psycopg2.extensions.parse_dsn(text)
    return params


def make_dsn(**params: Any) -> str:
    """A libpq DSN holding ``params`` (quoted as libpq wants)."""
    dsn: str = psycopg2.extensions.make_dsn(**params)
    return dsn


# -- one connection ----------------------------------------------------------------------------

def connect(target: Endpoint, timeout: float | None = DEFAULT_CONNECT_TIMEOUT, *,
            autocommit: bool = False, **extra: Any) -> Connection:
    """A psycopg2 connection to ``target``, bounded by ``timeout`` seconds.

    Raises :class:`DatabaseUnavailable` with a one-line message naming the target, or
    :class:`ConfigurationError` for parameters libpq refuses before any network.
    """
    kwargs = dict(target.params)
    if timeout is not None and "connect_timeout" not in kwargs:
        # libpq takes whole seconds; 0 would mean "wait forever".
        kwargs["connect_timeout"] = max(1, int(round(timeout)))
    kwargs.update(extra)
    try:
        conn: Connection = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        # libpq may echo a parameter's value (a password pasted into the wrong field); the
        # error is raised below, outside this block, so that not even __context__ holds it.
        failure = exc
    else:
        if autocommit:  # psycopg2's default is a transaction per block
            conn.autocommit = True
        return conn
    cause = redacted(failure, target.secrets())
    if isinstance(failure, psycopg2.OperationalError):
        error: Exception = DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {target.describe()}: {first_line(cause)}")
    else:  # an unknown option in a mapping, which libpq refuses before any network
        error = ConfigurationError(f"invalid connection parameters from {target.source}: "
                                   f"{first_line(cause)}")
    raise error from cause


@contextlib.contextmanager
def session(target: Endpoint, timeout: float | None = DEFAULT_CONNECT_TIMEOUT, action: str = "query",
            *, autocommit: bool = False) -> Iterator[Connection]:
    """A connection of its own, closed on leaving; errors in the block become the package's."""
    with contextlib.closing(connect(target, timeout, autocommit=autocommit)) as conn, \
            wrap_exceptions(target, action):
        yield conn


@contextlib.contextmanager
def cursor(target: Endpoint, timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
           action: str = "query") -> Iterator[Cursor]:
    """An autocommit cursor: each statement is its own transaction. Errors become the package's."""
    with session(target, timeout, action, autocommit=True) as conn, conn.cursor() as cur:
        yield cur


@contextlib.contextmanager
def transaction(target: Endpoint, timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
                action: str = "query") -> Iterator[Cursor]:
    """A cursor in one transaction: committed on leaving, rolled back on any error."""
    with session(target, timeout, action) as conn, conn, conn.cursor() as cur:
        yield cur


def rows(cur: Cursor, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The statement's rows as dicts, by column name."""
    cur.execute(sql, params)
    columns = [column.name for column in cur.description or ()]  # () only for a statement without rows
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def one_row(cur: Cursor) -> tuple[Any, ...]:
    """The row of a statement that always has one (an aggregate, a function's answer)."""
    row = cur.fetchone()
    if row is None:
        raise StoreError("the statement returned no row")
    return row


def count_rows(cur: Cursor, table: str) -> int:
    cur.execute(pgsql.SQL("SELECT COUNT(*) FROM {}").format(pgsql.Identifier(table)))
    return int(one_row(cur)[0])


# -- errors ------------------------------------------------------------------------------------

def is_connection_lost(exc: psycopg2.Error) -> bool:
    """True when ``exc`` says the connection, not the statement, failed.

    An error without a SQLSTATE never came from the server's executor: libpq lost the socket
    (psycopg2 raises a bare ``DatabaseError`` for some of those, ``OperationalError`` for others).
    """
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    code: str | None = getattr(exc, "pgcode", None)
    if code is None:
        # A ProgrammingError or DataError without a SQLSTATE is psycopg2 refusing a value on
        # the client ("can't adapt type"): the statement, not the connection.
        return type(exc) in (psycopg2.DatabaseError, psycopg2.OperationalError)
    return code.startswith(_CONNECTION_LOST)


def is_transient(exc: psycopg2.Error) -> bool:
    """True when the server refused the statement for now: an outage, not a failure."""
    code: str | None = getattr(exc, "pgcode", None)
    return code is not None and code.startswith(_TRANSIENT)


def translate(exc: psycopg2.Error, target: Endpoint, action: str = "query") -> Exception:
    """The package's error for a psycopg2 error that happened while doing ``action``."""
    secrets = target.secrets()
    exc.args = tuple(scrub(arg, secrets) if isinstance(arg, str) else arg for arg in exc.args)
    cause = redacted(exc, secrets)
    if isinstance(exc, psycopg2.errors.UndefinedTable):
        error: Exception = SchemaMissing(
            f"the checkpoint tables do not exist at {target.describe()}: run `jr-checkpoint migrate`")
    elif isinstance(exc, psycopg2.errors.UndefinedFunction):
        error = SchemaMissing(
            f"the checkpoint functions do not exist at {target.describe()}: run `jr-checkpoint migrate`")
    elif getattr(exc, "pgcode", None) == _LOST_TASK:
        error = TaskOwnershipLost(f"{first_line(cause)}; stopping")
    elif is_connection_lost(exc):
        error = DatabaseUnavailable(
            f"lost the connection to PostgreSQL at {target.describe()}: {first_line(cause)}")
    elif is_transient(exc):
        error = DatabaseUnavailable(
            f"PostgreSQL at {target.describe()} cannot take it now: {first_line(cause)}")
    else:
        error = StoreError(f"{action} failed at {target.describe()}: {first_line(cause)}")
    error.__cause__ = cause
    return error


@contextlib.contextmanager
def wrap_exceptions(target: Endpoint, action: str = "query") -> Iterator[None]:
    """Translate any psycopg2 error raised in the block; see :func:`translate`."""
    try:
        yield
    except psycopg2.Error as exc:
        error = translate(exc, target, action)
        raise error from error.__cause__


# -- a worker's connection ---------------------------------------------------------------------

class Connector:
    """One lazily opened connection in autocommit mode, shared between threads behind a lock,
    reopened after the server dropped it, never reused in a forked child.

    Autocommit: each statement is its own transaction, so an error can never leave the
    connection in an aborted transaction, and nothing relies on session state (it works the
    same through PgBouncer in transaction mode). ``resolve`` gives the target at the first
    statement, so constructing a connector never touches the network. ``dead_peer``: seconds
    within which libpq's keepalives and ``tcp_user_timeout`` fail a statement on a silent
    network, unless the DSN sets its own.
    """

    def __init__(self, resolve: Callable[[], Endpoint], *,
                 connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT, outage: float = 10.0,
                 dead_peer: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self._resolve = resolve
        self._target: Endpoint | None = None
        self.connect_timeout = connect_timeout
        self.outage = float(outage)
        self.dead_peer = dead_peer if math.isfinite(dead_peer) else 10.0
        self.sleep = sleep
        self.clock = clock
        self.lock = threading.RLock()
        self.round_trips = 0
        self._conn: Connection | None = None
        self._pid = os.getpid()
        self.orphans: list[Connection] = []  # a parent's connections, kept so a child never closes them
        #: Called (under the lock) when a forked child first uses this connector.
        self.after_fork: list[Callable[[], None]] = []

    @property
    def target(self) -> Endpoint:
        if self._target is None:
            self._target = self._resolve()
        return self._target

    @property
    def connected(self) -> bool:
        """True while an open connection is held."""
        return self._conn is not None and not self._conn.closed

    @property
    def backend_pid(self) -> int | None:
        """The server process of the open connection (pg_stat_activity.pid), if any."""
        return self._conn.info.backend_pid if self._conn is not None and self.connected else None

    def connection(self) -> Connection:
        """The open connection, opened (or reopened) if needed. Call with the lock held."""
        if self._pid != os.getpid():
            # A forked child: closing the parent's socket would end the parent's session.
            if self._conn is not None:
                self.orphans.append(self._conn)
            self._conn, self._pid = None, os.getpid()
            for hook in self.after_fork:
                hook()
        conn = self._conn
        if conn is None or conn.closed:
            self._conn = None
            conn = connect(self.target, self.connect_timeout, **self._defaults())
            conn.autocommit = True
            self._conn = conn
        return conn

    def _defaults(self) -> dict[str, Any]:
        """What the connection gets unless the DSN says otherwise: a name for pg_stat_activity,
        and libpq's dead-peer detection, so that a silent network (a partition, a dead host)
        fails a statement in time, instead of after the kernel's ~15 minutes."""
        bound = self.dead_peer
        defaults: dict[str, Any] = {
            "application_name": f"jr-checkpoint pid {os.getpid()}",
            "keepalives": 1,
            "keepalives_idle": max(1, int(bound / 2)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": max(1000, int(bound * 1000)),
        }
        return {key: value for key, value in defaults.items() if key not in self.target.params}

    def drop(self) -> None:
        """Close the connection (this process's own only)."""
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.close()
            except Exception:  # already broken
                pass

    def close(self) -> None:
        with self.lock:
            if self._pid == os.getpid():
                self.drop()
            self._conn = None

    def translate(self, exc: psycopg2.Error | DatabaseUnavailable, name: str) -> Exception:
        if isinstance(exc, DatabaseUnavailable):
            return exc
        return translate(exc, self.target, name)

    def run(self, name: str, params: Mapping[str, Any] | tuple[Any, ...] | None = None, fetch: str = "one",
            *, patient: bool = False, sql: str | None = None) -> Any:
        """Send one named statement (``QUERIES[name]``, or ``sql``) and fetch ``"one"`` row,
        ``"all"`` rows or ``"none"`` (the row count).

        A worker's statements are ``patient``: while the connection keeps dropping, or the
        server cannot take them for now, it is reopened and the statement sent again (each is
        idempotent) for up to ``outage`` seconds from the first failure; then the call fails
        with :class:`DatabaseUnavailable`. Others (the command line's) try once, and once more
        on a connection that was idle and found dead.
        """
        text = QUERIES[name] if sql is None else sql
        deadline = None  # the outage clock runs from the first failure
        delay, tries = 0.05, 0
        while True:
            tries += 1
            with self.lock:
                stale = self.connected  # a connection from before may have died since
                try:
                    conn = self.connection()
                    with conn.cursor() as cur:
                        self.round_trips += 1
                        cur.execute(text, params)
                        if fetch == "one":
                            return cur.fetchone()
                        if fetch == "all":
                            return cur.fetchall()
                        return cur.rowcount
                except (psycopg2.Error, DatabaseUnavailable) as exc:
                    error = self.translate(exc, name)
                    if not isinstance(error, DatabaseUnavailable):
                        raise error from error.__cause__
                    self.drop()
                    if deadline is None:
                        deadline = self.clock() + self.outage
                except ValueError as exc:  # psycopg2 refuses some values (NUL bytes) before sending
                    raise StoreError(f"{name} failed: {first_line(exc)}") from None
            if not patient:
                if stale and tries == 1:
                    continue  # the server dropped an idle connection: one fresh try
                raise error from error.__cause__
            if self.clock() >= deadline:
                raise error from error.__cause__
            logger.info("checkpoint connection lost (%s); trying again", error,
                        extra={"action": "reconnecting"})
            self.sleep(min(delay, max(0.0, deadline - self.clock())))
            delay = min(delay * 2, 0.5)


__all__ = ["DEFAULT_CONNECT_TIMEOUT", "Connector", "DsnSyntaxError", "Endpoint", "connect", "count_rows",
           "cursor", "is_connection_lost", "is_transient", "make_dsn", "parse_dsn", "rows", "session",
           "transaction", "translate", "wrap_exceptions"]
