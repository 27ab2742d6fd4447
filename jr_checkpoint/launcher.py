"""``jr-checkpoint run -- COMMAND``: run a command with jr-checkpoint installed at Python start-up.

No edit to the host's files: the command (``python3 -u jr_queue_worker.py 'Jr Name'``, or a
script that starts Python) runs with ``bootstrap/`` first on PYTHONPATH, so every Python it
starts imports ``bootstrap/sitecustomize.py``, which calls :func:`jr_checkpoint.install`
(the way ``opentelemetry-instrument`` and ``ddtrace-run`` work). The command replaces this
process (``exec``): same pid, so its exit status and the signals sent to it are its own, and a
systemd unit only changes its ``ExecStart``.

The environment is the unit's own, with ``bootstrap/`` put first on PYTHONPATH (the unit's
``/ganuda/lib`` stays, after it). A worker that would run without checkpoints does not start:
``JR_CHECKPOINT_REQUIRE=1`` makes the first Python that cannot import jr_checkpoint (or whose
``install()`` fails) exit with status 78 and one line, before its own code runs; a Python
command whose flags skip the bootstrap (``-I``, ``-E``, ``-S``) is refused here. Both unless
``--allow-unchecked``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .dsn import ENV_DSN
from .errors import CommandNotRunnable, ConfigurationError

#: The directory that holds the start-up hook (a ``sitecustomize`` module).
BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"
#: Set in the command's environment, so the host (and an operator) can see it runs under us.
ENV_MARKER = "JR_CHECKPOINT_RUN"
#: Set unless --allow-unchecked: the bootstrap stops a Python that cannot install jr-checkpoint.
ENV_REQUIRE = "JR_CHECKPOINT_REQUIRE"
#: The status of a command that did not start because it would have run without checkpoints.
UNCHECKED_EXIT = 78
USAGE = ("jr-checkpoint run [--dsn DSN] [--wait SECONDS] [--on-task-finished MODULE:FUNCTION] "
         "[--allow-unchecked] -- COMMAND [ARGS...]")
#: How long the command's workers wait for a task another worker holds (install(wait=...)).
ENV_WAIT = "JR_CHECKPOINT_WAIT"
#: ``--on-task-finished MODULE:FUNCTION``, for install(on_task_finished=...) in the command.
ENV_ON_TASK_FINISHED = "JR_CHECKPOINT_ON_TASK_FINISHED"


def command_env(dsn: str | None = None, environ: Mapping[str, str] | None = None,
                wait: float | None = None, allow_unchecked: bool = False,
                on_task_finished: str | None = None) -> dict[str, str]:
    """The environment for COMMAND: the bootstrap first on PYTHONPATH, the marker, the DSN and
    the wait if given, and the requirement that jr-checkpoint installs unless allowed not to."""
    env = dict(os.environ if environ is None else environ)
    paths = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep)
             if entry and entry != str(BOOTSTRAP_DIR)]
    env["PYTHONPATH"] = os.pathsep.join([str(BOOTSTRAP_DIR), *paths])
    env[ENV_MARKER] = "1"
    if dsn:
        env[ENV_DSN] = dsn
    if wait is not None:
        env[ENV_WAIT] = repr(float(wait))
    if on_task_finished:
        env[ENV_ON_TASK_FINISHED] = on_task_finished
    if allow_unchecked:
        env.pop(ENV_REQUIRE, None)
    else:
        env[ENV_REQUIRE] = "1"
    return env


_PYTHON = re.compile(r"python[0-9.]*$")
#: Flags with which Python ignores PYTHONPATH (-I, -E) or skips sitecustomize (-S).
_SKIPS_BOOTSTRAP = frozenset("IES")


def skipped_bootstrap(command: Sequence[str]) -> str | None:
    """The flag with which a Python COMMAND would never import the bootstrap, if it has one."""
    if not command or not _PYTHON.match(os.path.basename(command[0])):
        return None
    for arg in command[1:]:
        if arg in ("-c", "-m", "-") or not arg.startswith("-") or arg.startswith("--"):
            return None  # the program starts here: the rest are its own arguments
        if arg.startswith(("-W", "-X")):
            continue
        flags = _SKIPS_BOOTSTRAP.intersection(arg[1:])
        if flags:
            return "-" + sorted(flags)[0]
    return None


def exec_command(command: Sequence[str], dsn: str | None = None, wait: float | None = None,
                 allow_unchecked: bool = False, on_task_finished: str | None = None) -> None:
    """Replace this process with COMMAND (searched on PATH); returns only by raising."""
    command = list(command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigurationError(f"run: no COMMAND given: {USAGE}")
    if on_task_finished is not None:
        from .install import named_hook  # checked here: a misspelled hook is refused at once

        try:
            named_hook(on_task_finished)
        except ValueError as exc:
            raise ConfigurationError(f"run: --on-task-finished: {exc}") from None
    flag = None if allow_unchecked else skipped_bootstrap(command)
    if flag:
        raise ConfigurationError(f"run: {command[0]} {flag} would skip jr-checkpoint's start-up hook "
                                 "and run without checkpoints: drop that flag, or pass --allow-unchecked")
    try:
        os.execvpe(command[0], command, command_env(dsn, wait=wait, allow_unchecked=allow_unchecked,
                                                    on_task_finished=on_task_finished))
    except FileNotFoundError as exc:
        raise CommandNotRunnable(f"run: command not found: {command[0]}", 127) from exc
    except OSError as exc:
        raise CommandNotRunnable(f"run: cannot run {command[0]}: {exc.strerror or exc}", 126) from exc
