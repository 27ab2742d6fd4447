"""The database boundary without a server: which error becomes which, and no password in any."""

from __future__ import annotations

import psycopg2
import pytest

from jr_checkpoint import db
from jr_checkpoint.dsn import Target
from jr_checkpoint.errors import DatabaseUnavailable
from tests.leaks import PASSWORD, assert_no_password, everything_shown

TARGET = Target({"host": "db1", "port": "6000", "dbname": "ledger", "password": PASSWORD}, "argument")


@pytest.mark.parametrize("error", [
    psycopg2.OperationalError("server closed the connection unexpectedly\n\tThis probably means..."),
    psycopg2.DatabaseError("could not receive data from server: Connection reset by peer"),
    psycopg2.InterfaceError("connection already closed"),
])
def test_errors_without_a_sqlstate_mean_the_connection_is_lost(error):
    # No SQLSTATE: libpq lost the socket, the server's executor never answered.
    assert error.pgcode is None
    with pytest.raises(DatabaseUnavailable) as info, db.wrap_exceptions(TARGET, "stats"):
        raise error
    assert str(info.value) == ("lost the connection to PostgreSQL at host=db1 port=6000 dbname=ledger: "
                               f"{str(error).splitlines()[0]}")
    assert type(info.value.__cause__) is type(error)


def test_a_password_in_a_psycopg2_error_is_masked_everywhere_in_the_chain():
    with pytest.raises(DatabaseUnavailable) as info, db.wrap_exceptions(TARGET):
        raise psycopg2.OperationalError(f'could not use "{PASSWORD}"\nsecond line {PASSWORD}\n')
    assert str(info.value).endswith(': could not use "********"')
    assert info.value.__context__ is not None  # Python keeps the original: it is masked in place
    assert_no_password(everything_shown(info.value))


def test_other_exceptions_pass_through_untouched():
    with pytest.raises(KeyError), db.wrap_exceptions(TARGET):
        raise KeyError(1)
    with db.wrap_exceptions(TARGET):
        pass  # and nothing at all happens without an error
