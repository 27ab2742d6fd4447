"""``jr-checkpoint run -- COMMAND``: run a command with jr-checkpoint installed at Python start-up.

No edit to the host's files: the command (``python3 -u jr_queue_worker.py 'Jr Name'``, or a
script that starts Python) runs with ``bootstrap/`` first on PYTHONPATH, so every Python it
starts imports ``bootstrap/sitecustomize.py``, which calls :func:`jr_checkpoint.install`
(the way ``opentelemetry-instrument`` and ``ddtrace-run`` work). The command replaces this
process (``exec``): same pid, so its exit status and the signals sent to it are its own, and a
systemd unit only changes its ``ExecStart``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .dsn import ENV_DSN
from .errors import CommandNotRunnable, ConfigurationError

#: The directory that holds the start-up hook (a ``sitecustomize`` module).
BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"
#: Set in the command's environment, so the host (and an operator) can see it runs under us.
ENV_MARKER = "JR_CHECKPOINT_RUN"
USAGE = "jr-checkpoint run [--dsn DSN] [--wait SECONDS] -- COMMAND [ARGS...]"
#: How long the command's workers wait for a task another worker holds (install(wait=...)).
ENV_WAIT = "JR_CHECKPOINT_WAIT"


def command_env(dsn: str | None = None, environ: Mapping[str, str] | None = None,
                wait: float | None = None) -> dict[str, str]:
    """The environment for COMMAND: the bootstrap first on PYTHONPATH, the marker, the DSN and
    the wait if given."""
    env = dict(os.environ if environ is None else environ)
    paths = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep)
             if entry and entry != str(BOOTSTRAP_DIR)]
    env["PYTHONPATH"] = os.pathsep.join([str(BOOTSTRAP_DIR), *paths])
    env[ENV_MARKER] = "1"
    if dsn:
        env[ENV_DSN] = dsn
    if wait is not None:
        env[ENV_WAIT] = repr(float(wait))
    return env


def exec_command(command: Sequence[str], dsn: str | None = None, wait: float | None = None) -> None:
    """Replace this process with COMMAND (searched on PATH); returns only by raising."""
    command = list(command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigurationError(f"run: no COMMAND given: {USAGE}")
    try:
        os.execvpe(command[0], command, command_env(dsn, wait=wait))
    except FileNotFoundError as exc:
        raise CommandNotRunnable(f"run: command not found: {command[0]}", 127) from exc
    except OSError as exc:
        raise CommandNotRunnable(f"run: cannot run {command[0]}: {exc.strerror or exc}", 126) from exc
