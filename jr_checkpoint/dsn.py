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
from collections.abc import Mapping
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


@dataclass(frozen=True)
class Target:
    """A resolved database target: connection parameters and where they came from."""

    params: dict[str, Any] = field(default_factory=dict)
    source: str = "libpq defaults"

    def describe(self) -> str:
        """host, port and database, as libpq would use them; never the password."""
        p = self.params
        host = p.get("host") or os.environ.get("PGHOST") or "local socket"
        port = p.get("port") or os.environ.get("PGPORT") or "5432"
        user = p.get("user") or os.environ.get("PGUSER")
        db = p.get("dbname") or os.environ.get("PGDATABASE") or user or "(default)"
        return f"host={host} port={port} dbname={db}"

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
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self.describe()}: {first_line(exc)}"
            ) from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _normalize(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if value is None or value == "":
            continue
        out[_ALIASES.get(key, key)] = value
    return out


_OPTION_NAME = re.compile(r'invalid (?:connection option|URI query parameter:) "[^"]*"$')
_PASSWORD = re.compile(r"password|://[^/@]*:[^/@]*@", re.IGNORECASE)


def _parse(dsn: str, source: str) -> Target:
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        # libpq quotes the offending fragment, which may be a piece of an unquoted password;
        # an unknown option's name is shown when the DSN holds no password at all.
        reason = first_line(exc)
        if not (_OPTION_NAME.search(reason) and not _PASSWORD.search(dsn)):
            reason = re.sub(r'"([^"]*)"', lambda m: m[0] if m[1] in ("=", "]") else '"..."', reason)
        raise ConfigurationError(f"invalid DSN from {source}: {reason}") from exc
    return Target(_normalize(params), source)


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
