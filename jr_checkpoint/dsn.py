"""Where the checkpoint database is.

One resolver for the whole package, in this order: an explicit ``dsn`` argument, the
``JR_CHECKPOINT_DSN`` environment variable, the host's own ``lib.secrets_loader.get_db_config()``
(the convention of the Jr executor) when that module can be imported, and finally libpq's
defaults, which read the ``PG*`` environment variables.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions

from .errors import ConfigurationError, DatabaseUnavailable

ENV_DSN = "JR_CHECKPOINT_DSN"
DEFAULT_CONNECT_TIMEOUT = 5
SECRETS_MODULE = "lib.secrets_loader"

# psycopg2 accepts the older spelling "database"; describe() and connect() want one name.
_ALIASES = {"database": "dbname"}

#: Connection parameters whose values are secrets: never in a message, a repr or a cause.
SECRET_PARAMETERS = ("password", "sslpassword")
MASK = "********"


@dataclass(frozen=True, repr=False)
class Target:
    """A resolved database target: connection parameters and where they came from."""

    params: dict[str, Any] = field(default_factory=dict)
    source: str = "libpq defaults"

    def __repr__(self) -> str:
        shown = {key: MASK if key in SECRET_PARAMETERS else _scrub_value(value, self.secrets())
                 for key, value in self.params.items()}
        return f"Target(params={shown!r}, source={self.source!r})"

    __str__ = __repr__

    def secrets(self) -> list[str]:
        """The secret values in ``params``, as given and percent-encoded (as a URI holds them)."""
        return _secret_spellings(str(self.params[key]) for key in SECRET_PARAMETERS if self.params.get(key))

    def describe(self) -> str:
        """host, port and database, as libpq would use them; never the password."""
        p = self.params
        host = p.get("host") or os.environ.get("PGHOST") or "local socket"
        port = p.get("port") or os.environ.get("PGPORT") or "5432"
        user = p.get("user") or os.environ.get("PGUSER")
        db = p.get("dbname") or os.environ.get("PGDATABASE") or user or "(default)"
        return scrub(f"host={host} port={port} dbname={db}", self.secrets())

    def connect(self, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT, **extra: Any):
        """Open a psycopg2 connection, bounded by ``connect_timeout`` seconds.

        Raises :class:`DatabaseUnavailable` with a one-line message naming the target.
        """
        kwargs = dict(self.params)
        if connect_timeout is not None and "connect_timeout" not in kwargs:
            # libpq takes whole seconds; 0 would mean "wait forever".
            kwargs["connect_timeout"] = max(1, int(round(connect_timeout)))
        kwargs.update(extra)
        try:
            return psycopg2.connect(**kwargs)
        except psycopg2.Error as exc:
            # libpq may echo a parameter's value (a password pasted into the wrong field); the
            # error is raised below, outside this block, so that not even __context__ holds it.
            failure = exc
        cause = redacted(failure, self.secrets())
        if isinstance(failure, psycopg2.OperationalError):
            error: Exception = DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self.describe()}: {first_line(cause)}")
        else:  # an unknown option in a mapping, which libpq refuses before any network
            error = ConfigurationError(f"invalid connection parameters from {self.source}: "
                                       f"{first_line(cause)}")
        raise error from cause


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _secret_spellings(values: Iterable[str]) -> list[str]:
    spellings = set()
    for value in values:
        spellings.update({value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value)})
    return sorted(spellings - {""}, key=len, reverse=True)  # the longest first: no partial masks


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by a mask."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _scrub_value(value: Any, secrets: Iterable[str]) -> Any:
    return scrub(value, secrets) if isinstance(value, str) else value


def redacted(exc: BaseException, secrets: Iterable[str] = (), text: str | None = None) -> BaseException:
    """A stand-in for ``exc`` to chain from: its type, its text with the secrets masked, no chain.

    The original's own ``__cause__``/``__context__`` and attributes (psycopg2's ``pgerror``,
    ``diag``) are left behind, since any of them may quote the secret.
    """
    message = scrub(str(exc) if text is None else text, secrets)
    try:
        copy = type(exc)(message)
    except Exception:  # an exception type whose constructor wants more than a message
        copy = RuntimeError(f"{type(exc).__name__}: {message}")
    return copy


def _normalize(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if value is None or value == "":
            continue
        out[_ALIASES.get(key, key)] = value
    return out


def _parse(dsn: str, source: str) -> Target:
    try:
        return Target(_normalize(psycopg2.extensions.parse_dsn(dsn)), source)
    except psycopg2.ProgrammingError as exc:
        failure = exc
    # Raised here, outside the except block, so that __context__ does not hold the raw error.
    # libpq quotes the offending fragment, which may be a piece of an unquoted password, or the
    # whole password (a bad percent-escape in a URI).
    reason = _QUOTED.sub(lambda m: m[0] if m[1] in ("=", "]") else '"..."', str(failure).strip())
    cause = redacted(failure, text=reason)
    raise ConfigurationError(f"invalid DSN from {source}: {first_line(cause)}") from cause


_QUOTED = re.compile(r'"([^"]*)"')


def _host_config(host_root: str | os.PathLike | None) -> Mapping[str, Any] | None:
    if host_root is not None:
        root = os.fspath(host_root)
        if not os.path.isdir(root):
            raise ConfigurationError(f"host root {root!r} is not a directory")
        if root not in sys.path:
            sys.path.insert(0, root)
    try:
        module = importlib.import_module(SECRETS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name in ("lib", SECRETS_MODULE):
            return None  # no host here: fall through to libpq's defaults
        raise ConfigurationError(f"{SECRETS_MODULE} cannot be imported: {first_line(exc)}") from exc
    except Exception as exc:  # the host's code: a broken loader must not silently mean "defaults"
        raise ConfigurationError(f"{SECRETS_MODULE} cannot be imported: {first_line(exc)}") from exc
    get_db_config = getattr(module, "get_db_config", None)
    if get_db_config is None:
        return None
    try:
        config = get_db_config()
    except Exception as exc:  # the host's code: anything may come out of it
        raise ConfigurationError(f"{SECRETS_MODULE}.get_db_config() failed: {first_line(exc)}") from exc
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"{SECRETS_MODULE}.get_db_config() did not return a mapping")
    return config


def resolve(
    dsn: str | Mapping[str, Any] | Target | None = None,
    *,
    host_root: str | os.PathLike | None = None,
) -> Target:
    """Find the checkpoint database. See the module docstring for the order."""
    if isinstance(dsn, Target):
        return dsn
    if isinstance(dsn, Mapping):
        return Target(_normalize(dsn), "argument")
    if dsn:
        return _parse(dsn, "argument")
    env = os.environ.get(ENV_DSN)
    if env:
        return _parse(env, ENV_DSN)
    config = _host_config(host_root)
    if config is not None:
        return Target(_normalize(config), SECRETS_MODULE)
    return Target({}, "libpq defaults")


def libpq_env_configured() -> bool:
    """True when any PG* variable that points libpq at a server is set."""
    return any(os.environ.get(name) for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"))
