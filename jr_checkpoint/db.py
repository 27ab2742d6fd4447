"""The database boundary: how the package opens a connection, and the one place where
psycopg2's errors become the package's own (procrastinate's ``wrap_exceptions`` is the model).

Nothing that leaves this module holds a password: a translated error is chained from a
redacted copy of psycopg2's error, and the original itself (which Python keeps as the new
error's ``__context__``) has its secrets masked in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors

from .dsn import DEFAULT_CONNECT_TIMEOUT, Target, first_line, redacted, scrub
from .errors import DatabaseUnavailable, SchemaMissing, StoreError, TaskOwnershipLost

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


def connect(target: Target, timeout: float | None = DEFAULT_CONNECT_TIMEOUT, *,
            autocommit: bool = False) -> Any:
    """A psycopg2 connection to ``target``; a failure is a one-line :class:`DatabaseUnavailable`."""
    conn = target.connect(timeout)
    conn.autocommit = autocommit
    return conn


def is_connection_lost(exc: psycopg2.Error) -> bool:
    """True when ``exc`` says the connection, not the statement, failed.

    An error without a SQLSTATE never came from the server's executor: libpq lost the socket
    (psycopg2 raises a bare ``DatabaseError`` for some of those, ``OperationalError`` for others).
    """
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    code = getattr(exc, "pgcode", None)
    if code is None:
        # A ProgrammingError or DataError without a SQLSTATE is psycopg2 refusing a value on
        # the client ("can't adapt type"): the statement, not the connection.
        return type(exc) in (psycopg2.DatabaseError, psycopg2.OperationalError)
    return code.startswith(_CONNECTION_LOST)


def is_transient(exc: psycopg2.Error) -> bool:
    """True when the server refused the statement for now: an outage, not a failure."""
    code = getattr(exc, "pgcode", None)
    return code is not None and code.startswith(_TRANSIENT)


def translate(exc: psycopg2.Error, target: Target, action: str = "query") -> Exception:
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
def wrap_exceptions(target: Target, action: str = "query") -> Iterator[None]:
    """Translate any psycopg2 error raised in the block; see :func:`translate`."""
    try:
        yield
    except psycopg2.Error as exc:
        error = translate(exc, target, action)
        raise error from error.__cause__


__all__ = ["connect", "is_connection_lost", "is_transient", "translate", "wrap_exceptions"]
