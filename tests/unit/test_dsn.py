"""The resolver: argument, JR_CHECKPOINT_DSN, the host's lib.secrets_loader, libpq defaults."""

from __future__ import annotations

import importlib
import socket
import sys
import textwrap
from urllib.parse import quote

import psycopg2
import pytest

from jr_checkpoint import dsn as dsn_module
from jr_checkpoint.dsn import Target, resolve
from jr_checkpoint.errors import ConfigurationError, DatabaseUnavailable
from tests.leaks import PASSWORD, assert_no_password, everything_shown

HOST_CONFIG = "{'host': 'hosthost', 'port': 6001, 'database': 'hostdb', 'user': 'jr', 'password': 'hostpw'}"


def _forget_lib() -> dict:
    gone = {name: mod for name, mod in sys.modules.items() if name == "lib" or name.startswith("lib.")}
    for name in gone:
        del sys.modules[name]
    return gone


@pytest.fixture
def make_host(tmp_path, monkeypatch):
    """Write a host root holding lib/secrets_loader.py; sys.path and sys.modules are restored after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = _forget_lib()

    def make(body: str, name: str = "host"):
        root = tmp_path / name
        (root / "lib").mkdir(parents=True)
        (root / "lib" / "__init__.py").write_text("")
        (root / "lib" / "secrets_loader.py").write_text(textwrap.dedent(body))
        importlib.invalidate_caches()
        return root

    yield make
    _forget_lib()
    sys.modules.update(saved)


def loader(config: str = HOST_CONFIG) -> str:
    return f"def get_db_config():\n    return {config}\n"


HOST_PARAMS = {"host": "hosthost", "port": 6001, "dbname": "hostdb", "user": "jr", "password": "hostpw"}


# -- the order -------------------------------------------------------------------------------


def test_argument_string_wins_over_environment_and_host(make_host, monkeypatch):
    root = make_host(loader())
    monkeypatch.setenv(dsn_module.ENV_DSN, "host=fromenv dbname=envdb")
    target = resolve("host=fromarg port=6543 dbname=argdb user=u", host_root=root)
    assert target == Target({"host": "fromarg", "port": "6543", "dbname": "argdb", "user": "u"}, "argument")
    assert "lib.secrets_loader" not in sys.modules  # the host was not even consulted


def test_argument_uri_is_parsed():
    target = resolve("postgresql://u:pw@db.example:6000/ledger")
    assert target.params == {"user": "u", "password": "pw", "host": "db.example", "port": "6000",
                             "dbname": "ledger"}
    assert target.source == "argument"


def test_argument_mapping_normalizes_database_alias_and_drops_empty_values(monkeypatch):
    monkeypatch.setenv(dsn_module.ENV_DSN, "host=fromenv")
    target = resolve({"host": "h", "database": "d", "port": 5433, "user": "", "password": None})
    assert target == Target({"host": "h", "dbname": "d", "port": 5433}, "argument")


def test_target_argument_is_returned_as_is():
    target = Target({"host": "x"}, "somewhere")
    assert resolve(target) is target


def test_environment_variable_comes_second(make_host, monkeypatch):
    root = make_host(loader())
    monkeypatch.setenv(dsn_module.ENV_DSN, "host=fromenv port=7000 dbname=envdb")
    for argument in (None, ""):
        target = resolve(argument, host_root=root)
        assert target == Target({"host": "fromenv", "port": "7000", "dbname": "envdb"}, "JR_CHECKPOINT_DSN")
    assert "lib.secrets_loader" not in sys.modules


def test_host_secrets_loader_found_through_host_root(make_host):
    root = make_host(loader())
    target = resolve(host_root=root)
    assert target == Target(HOST_PARAMS, "lib.secrets_loader")
    assert str(root) == sys.path[0]
    assert sys.modules["lib.secrets_loader"].__file__ == str(root / "lib" / "secrets_loader.py")


def test_host_secrets_loader_found_on_sys_path(make_host):
    root = make_host(loader())
    sys.path.insert(0, str(root))
    assert resolve() == Target(HOST_PARAMS, "lib.secrets_loader")


def test_host_root_is_not_added_twice(make_host):
    root = make_host(loader())
    resolve(host_root=root)
    _forget_lib()
    resolve(host_root=root)
    assert sys.path.count(str(root)) == 1


def test_libpq_defaults_when_nothing_else(make_host, monkeypatch):
    monkeypatch.setenv("PGHOST", "pg-env-host")  # libpq reads these itself; the resolver passes nothing
    assert resolve() == Target({}, "libpq defaults")


def test_host_root_without_secrets_loader_falls_back_to_libpq_defaults(tmp_path, make_host):
    (tmp_path / "bare" / "lib").mkdir(parents=True)
    (tmp_path / "bare" / "lib" / "__init__.py").write_text("")
    importlib.invalidate_caches()
    assert resolve(host_root=tmp_path / "bare") == Target({}, "libpq defaults")


def test_secrets_loader_without_get_db_config_falls_back_to_libpq_defaults(make_host):
    root = make_host("SOMETHING_ELSE = 1\n")
    assert resolve(host_root=root) == Target({}, "libpq defaults")


def test_host_root_that_is_not_a_directory(tmp_path, make_host):
    with pytest.raises(ConfigurationError, match="is not a directory"):
        resolve(host_root=tmp_path / "nowhere")


# -- a broken host configuration is an error, never a silent fallback --------------------------


def test_failing_get_db_config_is_a_configuration_error(make_host):
    root = make_host("""
        def get_db_config():
            raise KeyError("DB_PASSWORD\\nsecond line")
    """)
    with pytest.raises(ConfigurationError) as info:
        resolve(host_root=root)
    message = str(info.value)
    assert message.startswith("lib.secrets_loader.get_db_config() failed: ")
    assert "DB_PASSWORD" in message
    assert "\n" not in message
    assert isinstance(info.value.__cause__, KeyError)


def test_get_db_config_returning_a_non_mapping(make_host):
    root = make_host(loader("'host=x dbname=y'"))
    with pytest.raises(ConfigurationError, match=r"did not return a mapping"):
        resolve(host_root=root)


def test_secrets_loader_with_a_missing_dependency_is_not_ignored(make_host):
    root = make_host("import jr_no_such_dependency_xyz\n" + loader())
    with pytest.raises(ConfigurationError) as info:
        resolve(host_root=root)
    assert str(info.value) == ("lib.secrets_loader cannot be imported: "
                               "No module named 'jr_no_such_dependency_xyz'")


def test_secrets_loader_with_a_syntax_error_is_a_configuration_error(make_host):
    root = make_host("def get_db_config(:\n")
    with pytest.raises(ConfigurationError, match=r"^lib\.secrets_loader cannot be imported: "):
        resolve(host_root=root)


# -- describe() and invalid DSNs never show the password ---------------------------------------


def test_describe_names_host_port_database_and_never_the_password():
    for target in (resolve("host=db1 port=6000 dbname=ledger user=u password=s3cret-pw"),
                   resolve("postgresql://u:s3cret-pw@db1:6000/ledger"),
                   resolve({"host": "db1", "port": 6000, "database": "ledger", "password": "s3cret-pw"})):
        assert target.describe() == "host=db1 port=6000 dbname=ledger"
        assert "s3cret" not in target.describe()


def test_describe_follows_libpq_defaults(monkeypatch):
    assert Target({}).describe() == "host=local socket port=5432 dbname=(default)"
    assert Target({"user": "jr"}).describe() == "host=local socket port=5432 dbname=jr"
    monkeypatch.setenv("PGHOST", "envhost")
    monkeypatch.setenv("PGPORT", "6100")
    monkeypatch.setenv("PGUSER", "envuser")
    assert Target({}).describe() == "host=envhost port=6100 dbname=envuser"
    monkeypatch.setenv("PGDATABASE", "envdb")
    assert Target({}).describe() == "host=envhost port=6100 dbname=envdb"
    assert Target({"host": "h", "dbname": "d"}).describe() == "host=h port=6100 dbname=d"


@pytest.mark.parametrize("bad", [
    "host=x password=my secret",            # an unquoted password with a space
    "host=x secret",                        # a pasted password without its keyword
    "postgresql://u:secret@[::1/db",        # libpq echoes the whole URI here
    "postgresql://u:secret@h/db?bogus=1",
    "host=x password='secret",
])
def test_invalid_dsn_is_one_line_without_the_password(bad):
    with pytest.raises(ConfigurationError) as info:
        resolve(bad)
    message = str(info.value)
    assert message.startswith("invalid DSN from argument: ")
    assert "\n" not in message
    assert "secret" not in message


def test_invalid_dsn_from_the_environment_says_so(monkeypatch):
    monkeypatch.setenv(dsn_module.ENV_DSN, "not a dsn")
    with pytest.raises(ConfigurationError) as info:
        resolve()
    assert str(info.value) == ('invalid DSN from JR_CHECKPOINT_DSN: invalid dsn: '
                               'missing "=" after "..." in connection info string')


# -- Target.connect ----------------------------------------------------------------------------


def test_connect_passes_a_bounded_timeout(mocker):
    connect = mocker.patch.object(psycopg2, "connect", return_value="conn")
    target = Target({"host": "h", "dbname": "d"})
    assert target.connect() == "conn"
    connect.assert_called_with(host="h", dbname="d", connect_timeout=5)
    target.connect(0.2)  # libpq counts whole seconds, and 0 would mean forever
    connect.assert_called_with(host="h", dbname="d", connect_timeout=1)
    target.connect(2.6)
    connect.assert_called_with(host="h", dbname="d", connect_timeout=3)
    target.connect(None)
    connect.assert_called_with(host="h", dbname="d")
    Target({"host": "h", "connect_timeout": "9"}).connect(2)
    connect.assert_called_with(host="h", connect_timeout="9")


def test_connect_failure_is_one_line_naming_the_target(mocker):
    mocker.patch.object(psycopg2, "connect", side_effect=psycopg2.OperationalError(
        'connection to server at "10.9.9.9", port 6000 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"))
    target = resolve("host=10.9.9.9 port=6000 dbname=ledger password=s3cret-pw")
    with pytest.raises(DatabaseUnavailable) as info:
        target.connect()
    assert str(info.value) == (
        "cannot connect to PostgreSQL at host=10.9.9.9 port=6000 dbname=ledger: "
        'connection to server at "10.9.9.9", port 6000 failed: Connection refused'
    )


def test_libpq_env_configured(monkeypatch):
    assert dsn_module.libpq_env_configured() is False
    monkeypatch.setenv("PGSERVICE", "jr")
    assert dsn_module.libpq_env_configured() is True


# -- no password in any output: messages, exception chains, tracebacks, repr() ------------------

@pytest.mark.parametrize("bad", [
    f"postgresql://u:{PASSWORD}@db1:6000/ledger",            # libpq quotes the bad token whole
    f"host=db1 dbname=ledger password='{PASSWORD}",          # unterminated quote
    f"host=db1 dbname=ledger password={PASSWORD} bogus=1",   # unknown option
    f"postgresql://u:{quote(PASSWORD, safe='')}@db1/ledger?bogus=1",
    f"host=db1 password={PASSWORD} dbname",                  # a keyword without its value
])
def test_an_invalid_dsn_keeps_the_password_out_of_the_whole_chain(bad):
    with pytest.raises(ConfigurationError) as info:
        resolve(bad)
    assert str(info.value).startswith("invalid DSN from argument: invalid dsn: ")
    assert info.value.__context__ is None or info.value.__context__ is info.value.__cause__
    assert_no_password(everything_shown(info.value))
    assert isinstance(info.value.__cause__, psycopg2.ProgrammingError)  # its type stays, for a reader


def test_the_percent_escape_case_still_says_what_is_wrong():
    with pytest.raises(ConfigurationError) as info:
        resolve(f"postgresql://u:{PASSWORD}@db1/ledger")
    assert str(info.value) == 'invalid DSN from argument: invalid dsn: invalid percent-encoded token: "..."'


@pytest.mark.parametrize("given", [
    f"host=db1 port=6000 dbname=ledger user=u password={PASSWORD} sslpassword={PASSWORD}x",
    f"postgresql://u:{quote(PASSWORD, safe='')}@db1:6000/ledger",
    {"host": "db1", "database": "ledger", "password": PASSWORD},
])
def test_repr_and_str_of_a_target_mask_the_password(given):
    target = resolve(given)
    assert target.params["password"] == PASSWORD  # still there to connect with
    for shown in (repr(target), str(target), f"{target}", repr([target]), repr({"t": target})):
        assert_no_password(shown)
        assert "password': '********'" in shown
    assert "host': 'db1'" in repr(target)


def test_a_password_inside_another_parameter_is_masked_too():
    target = Target({"dbname": f"host=db1 password={PASSWORD}", "password": PASSWORD})
    assert_no_password(repr(target))
    assert_no_password(target.describe())


def test_targets_still_compare_by_their_parameters():
    assert resolve(f"host=h password={PASSWORD}") == Target({"host": "h", "password": PASSWORD}, "argument")
    assert resolve("host=h password=a") != resolve("host=h password=b")


def test_a_connect_error_that_echoes_the_password_is_masked_in_the_whole_chain(mocker):
    # libpq echoes a value it cannot use, e.g. a password pasted into the sslmode field.
    mocker.patch.object(psycopg2, "connect", side_effect=psycopg2.OperationalError(
        f'invalid sslmode value: "{PASSWORD}"\nand again {quote(PASSWORD)}\n'))
    target = Target({"host": "db1", "dbname": "ledger", "password": PASSWORD}, "argument")
    with pytest.raises(DatabaseUnavailable) as info:
        target.connect()
    assert str(info.value) == ('cannot connect to PostgreSQL at host=db1 port=5432 dbname=ledger: '
                               'invalid sslmode value: "********"')
    assert info.value.__context__ is None or info.value.__context__ is info.value.__cause__
    assert isinstance(info.value.__cause__, psycopg2.OperationalError)
    assert_no_password(everything_shown(info.value))


def test_an_unknown_option_in_a_mapping_is_a_configuration_error_without_the_password():
    # libpq refuses it before any network: no server needed.
    target = resolve({"host": "db1", "password": PASSWORD, "bogus": PASSWORD})
    with pytest.raises(ConfigurationError) as info:
        target.connect()
    assert str(info.value) == ('invalid connection parameters from argument: '
                               'invalid dsn: invalid connection option "bogus"')
    assert_no_password(everything_shown(info.value))


def test_a_closed_port_keeps_the_password_out_of_the_whole_chain():
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        target = resolve(f"postgresql://u:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/ledger")
        with pytest.raises(DatabaseUnavailable) as info:
            target.connect(1)
    assert "Connection refused" in str(info.value)
    assert_no_password(everything_shown(info.value))
