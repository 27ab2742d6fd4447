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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import db
from .db import DEFAULT_CONNECT_TIMEOUT as DEFAULT_CONNECT_TIMEOUT  # re-exported
from .errors import ConfigurationError
from .text import MASK, first_line, redacted, scrub, secret_spellings

ENV_DSN = "JR_CHECKPOINT_DSN"
SECRETS_MODULE = "lib.secrets_loader"

# psycopg2 accepts the older spelling "database"; describe() and connect() want one name.
_ALIASES = {"database": "dbname"}

#: Connection parameters whose values are secrets: never in a message, a repr or a cause.
SECRET_PARAMETERS = ("password", "sslpassword")


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
        return secret_spellings(str(self.params[key]) for key in SECRET_PARAMETERS if self.params.get(key))

    def describe(self) -> str:
        """host, port and database, as libpq would use them; never the password."""
        p = self.params
        host = p.get("host") or os.environ.get("PGHOST") or "local socket"
        port = p.get("port") or os.environ.get("PGPORT") or "5432"
        user = p.get("user") or os.environ.get("PGUSER")
        name = p.get("dbname") or os.environ.get("PGDATABASE") or user or "(default)"
        return scrub(f"host={host} port={port} dbname={name}", self.secrets())

    def connect(self, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT, **extra: Any) -> Any:
        """A connection, bounded by ``connect_timeout`` seconds: :func:`jr_checkpoint.db.connect`."""
        return db.connect(self, connect_timeout, **extra)


def _scrub_value(value: Any, secrets: Iterable[str]) -> Any:
    return scrub(value, secrets) if isinstance(value, str) else value


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
        return Target(_normalize(db.parse_dsn(dsn)), source)
    except db.DsnSyntaxError as exc:
        failure = exc
    # Raised here, outside the except block, so that __context__ does not hold the raw error.
    # libpq quotes the offending fragment, which may be a piece of an unquoted password, or the
    # whole password (a bad percent-escape in a URI); an unknown option's name is shown when the
    # DSN holds no password at all.
    reason = str(failure).strip()
    if not (_OPTION_NAME.search(first_line(failure)) and not _PASSWORD.search(dsn)):
        reason = _QUOTED.sub(lambda m: m[0] if m[1] in ("=", "]") else '"..."', reason)
    cause = redacted(failure, text=reason)
    raise ConfigurationError(f"invalid DSN from {source}: {first_line(cause)}") from cause


_QUOTED = re.compile(r'"([^"]*)"')


def _host_config(host_root: str | os.PathLike[str] | None) -> Mapping[str, Any] | None:
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


#: What a ``dsn`` argument may be: a DSN or URI, libpq's parameters, a resolved target, or
#: None (the environment, the host's configuration, libpq's defaults: the module docstring).
Dsn = str | Mapping[str, Any] | Target | None


def resolve(
    dsn: Dsn = None,
    *,
    host_root: str | os.PathLike[str] | None = None,
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
