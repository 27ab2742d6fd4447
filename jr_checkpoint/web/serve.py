"""``jr-checkpoint serve``: the dashboard on its own, on waitress (a production WSGI server).

With no database configured it serves the demo's embedded PostgreSQL (started here, stopped
when the server stops), so ``jr-checkpoint demo`` then ``jr-checkpoint serve`` shows the
demo's history on a fresh machine.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

from flask import Flask

from .. import dsn as dsn_module
from .. import embedded
from ..errors import ConfigurationError
from . import create_blueprint

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
THREADS = 4


def make_app(target: dsn_module.Target, connect_timeout: float = dsn_module.DEFAULT_CONNECT_TIMEOUT) -> Flask:
    app = Flask("jr_checkpoint.web")
    app.register_blueprint(create_blueprint(dsn=target, connect_timeout=connect_timeout))
    return app


@contextlib.contextmanager
def ledger(dsn: str | None, host_root: str | None, data_dir: str | None,
           say: Callable[[str], None]) -> Iterator[dsn_module.Target]:
    """The configured database; with none configured, the demo's embedded server."""
    target = embedded.configured(dsn, host_root)
    if target is not None:
        say(f"database: {target.describe()} (from {target.source})")
        yield target
        return
    if not embedded.available():
        yield dsn_module.resolve(None)  # libpq defaults: the page says what is wrong
        return
    directory = Path(data_dir).expanduser() if data_dir else embedded.default_data_dir()
    note = "" if embedded.has_data(directory) else " (empty: run `jr-checkpoint demo` first)"
    with embedded.server(directory) as served:
        say(f"database: the demo's embedded PostgreSQL in {directory}{note}")
        yield served


def serve(target: dsn_module.Target, host: str, port: int, say: Callable[[str], None],
          connect_timeout: float = dsn_module.DEFAULT_CONNECT_TIMEOUT) -> None:
    """Serve until interrupted (Ctrl-C: KeyboardInterrupt, which the caller turns into exit 0)."""
    import waitress.server

    try:
        server = waitress.server.create_server(make_app(target, connect_timeout), host=host, port=port,
                                        threads=THREADS, ident="jr-checkpoint")
    except OSError as exc:  # the port is taken, the address is not ours
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    shown = f"[{host}]" if ":" in host else host
    bound = getattr(server, "effective_port", port)  # several sockets (e.g. "localhost"): as asked
    say(f"serving the dashboard on http://{shown}:{bound}/ (Ctrl-C to stop)")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop: as Ctrl-C
    try:
        server.run()  # returns on Ctrl-C: waitress catches KeyboardInterrupt and closes
    finally:
        server.close()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ledger", "make_app", "serve"]
