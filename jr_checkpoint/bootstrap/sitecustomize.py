"""jr-checkpoint's start-up hook: `jr-checkpoint run` puts this directory first on PYTHONPATH.

Python's `site` imports the first `sitecustomize` on sys.path at interpreter start-up, so
every Python started under `jr-checkpoint run` (and every Python it starts, since they inherit
PYTHONPATH) imports this module before its own code. It:

1. runs the `sitecustomize` that would have been imported without it (the next one on
   sys.path, as ddtrace's bootstrap does), so a host's own start-up hook still runs;
2. imports jr_checkpoint and calls ``jr_checkpoint.install()``, which only registers import
   hooks: the executor is checkpointed when the host imports it. The database is the
   library's usual one (JR_CHECKPOINT_DSN, which ``--dsn`` sets, then the host's
   lib.secrets_loader, then PG*).

When either fails it says so in one line on stderr. Then, if ``JR_CHECKPOINT_REQUIRE`` is set
(`run` sets it unless given ``--allow-unchecked``), this Python exits with status 78 before
any of its own code runs: a worker that would run without checkpoints does not start. Once
installed, it takes ``JR_CHECKPOINT_REQUIRE`` out of the environment, so the Pythons the worker
starts (a bash step's ``python3 ...``, maybe another interpreter) are never stopped by it: they
only get the one line. Kept to plain syntax (3.6), since the Python it runs in may be older than
jr-checkpoint's.
"""

import os
import sys
from typing import Any

_PREFIX = "jr-checkpoint run: "
_REQUIRE = "JR_CHECKPOINT_REQUIRE"
#: EX_CONFIG (sysexits.h): this Python is not set up to run the worker with checkpoints.
_UNCHECKED_EXIT = 78


def _say(message: str) -> None:
    sys.stderr.write(_PREFIX + message + "\n")
    sys.stderr.flush()


def _chain() -> None:
    """Run the sitecustomize this one hides, if there is one, as `site` would have."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    ours = sys.modules.get("sitecustomize")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module  # while it runs, it is sitecustomize
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # as site does: report and go on
        sys.modules["sitecustomize"] = ours  # type: ignore[assignment]  # None as found: kept as is
        _say(f"the other sitecustomize ({spec.origin}) failed: {type(exc).__name__}: {exc}")


def _refuse_or_go_on(problem: str) -> None:
    """One line; then stop this Python if the worker must not run unchecked."""
    if os.environ.get(_REQUIRE) == "1":
        _say(problem + "; not running it without checkpoints: install jr-checkpoint in that "
             "environment (pip install jr_checkpoint-*.whl), or pass --allow-unchecked")
        os._exit(_UNCHECKED_EXIT)
    _say(problem + "; running without checkpoints")


def _install() -> None:
    try:
        import jr_checkpoint
    except Exception as exc:
        _refuse_or_go_on(f"this Python ({sys.executable}) cannot import jr_checkpoint: "
                         f"{type(exc).__name__}: {exc}")
        return
    dsn = os.environ.get("JR_CHECKPOINT_DSN") or None
    options: dict[str, Any] = {}  # install()'s keywords
    try:
        if os.environ.get("JR_CHECKPOINT_WAIT"):
            options["wait"] = float(os.environ["JR_CHECKPOINT_WAIT"])
        if os.environ.get("JR_CHECKPOINT_ON_TASK_FINISHED"):
            options["on_task_finished"] = os.environ["JR_CHECKPOINT_ON_TASK_FINISHED"]
        jr_checkpoint.install(dsn, **options)
    except Exception as exc:
        _refuse_or_go_on(f"jr_checkpoint.install() failed in this Python ({sys.executable}): "
                         f"{type(exc).__name__}: {exc}")
        return
    os.environ.pop(_REQUIRE, None)  # checked once, here: the Pythons this one starts go on


_chain()
_install()
