"""Which database ``jr-checkpoint migrate`` works on, and how it was found, said on stdout.

An operator who tried the demo first must not take its embedded database for the host's. So
the target is named in the first line, always, with where it came from, in this order:
``--dsn``; ``$JR_CHECKPOINT_DSN``; the host's ``lib.secrets_loader`` (found at ``--host-root``,
at the host's root ``/ganuda`` when that exists, or on ``sys.path``); the ``PG*`` variables;
and, only when none of these is there, no host root exists and the demo left a database, the
demo's embedded server. A host root given or found whose loader is missing or fails is an
error (exit 2), never a fall back onto another database.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from . import dsn as dsn_module
from . import embedded, interrupts
from .errors import ConfigurationError

#: Where the host lives when nobody says (the host's lib/secrets_loader.py fixes it so).
HOST_ROOTS = ("/Users/Shared/ganuda",) if sys.platform == "darwin" else ("/ganuda",)


def _found_root() -> str | None:
    return next((root for root in HOST_ROOTS if os.path.isdir(root)), None)


def _loader_root() -> str:
    module = sys.modules.get(dsn_module.SECRETS_MODULE)
    origin = getattr(module, "__file__", None)
    return str(Path(origin).resolve().parents[1]) if origin else "?"


@contextlib.contextmanager
def target(dsn: str | None, host_root: str | None) -> Iterator[tuple[dsn_module.Target, str]]:
    """The database to migrate, and the line that names it (see the module docstring)."""
    if dsn:
        found = dsn_module.resolve(dsn)
        yield found, f"{found.describe()} (from --dsn)"
        return
    if os.environ.get(dsn_module.ENV_DSN):
        found = dsn_module.resolve(None)
        yield found, f"{found.describe()} (from ${dsn_module.ENV_DSN})"
        return
    root = host_root if host_root is not None else _found_root()
    found = dsn_module.resolve(None, host_root=root)  # a failing loader raises: exit 2
    if found.source == dsn_module.SECRETS_MODULE:
        yield found, f"{found.describe()} (from the host's {dsn_module.SECRETS_MODULE} at {_loader_root()})"
        return
    if root is not None:
        how = "given by --host-root" if host_root is not None else "found"
        raise ConfigurationError(f"host root {root} ({how}) has no {dsn_module.SECRETS_MODULE} "
                                 f"(lib/secrets_loader.py with get_db_config()): not migrating any other "
                                 "database; pass --dsn, or --host-root DIR")
    if dsn_module.libpq_env_configured():
        yield found, f"{found.describe()} (from the PG* variables)"
        return
    data_dir = embedded.default_data_dir()
    if embedded.has_data(data_dir) and embedded.available():
        with embedded.server(data_dir) as served, interrupts.serving():
            yield served, (f"the demo's embedded PostgreSQL in {data_dir}, NOT a host's database "
                           f"(nothing configured, and no host root at {' or '.join(HOST_ROOTS)})")
        return
    yield found, f"{found.describe()} (from libpq's defaults: nothing configured)"
