"""jr-checkpoint's start-up hook: `jr-checkpoint run` puts this directory first on PYTHONPATH.

Python's `site` imports the first `sitecustomize` on sys.path at interpreter start-up, so
every Python started under `jr-checkpoint run` (and every Python it starts, since they inherit
PYTHONPATH) imports this module before its own code. It:

1. runs the `sitecustomize` that would have been imported without it (the next one on
   sys.path, as ddtrace's bootstrap does), so a host's own start-up hook still runs;
2. imports jr_checkpoint, or says in one line that this Python cannot, and goes on without it;
3. calls ``jr_checkpoint.install()``, which only registers import hooks: the executor is
   checkpointed when the host imports it. The database is the library's usual one
   (JR_CHECKPOINT_DSN, which ``--dsn`` sets, then the host's lib.secrets_loader, then PG*).

It never stops the host: any failure here is one line on stderr. Kept to plain syntax (3.6),
since the Python it runs in may be older than jr-checkpoint's.
"""

import os
import sys

_PREFIX = "jr-checkpoint run: "


def _say(message):
    sys.stderr.write(_PREFIX + message + "\n")
    sys.stderr.flush()


def _chain():
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
        sys.modules["sitecustomize"] = ours
        _say(f"the other sitecustomize ({spec.origin}) failed: {type(exc).__name__}: {exc}")


def _install():
    try:
        import jr_checkpoint
    except Exception as exc:
        _say(f"this Python ({sys.executable}) cannot import jr_checkpoint: {type(exc).__name__}: "
             f"{exc}; install jr-checkpoint in that environment")
        return
    dsn = os.environ.get("JR_CHECKPOINT_DSN") or None
    options = {}
    try:
        if os.environ.get("JR_CHECKPOINT_WAIT"):
            options["wait"] = float(os.environ["JR_CHECKPOINT_WAIT"])
        jr_checkpoint.install(dsn, **options)
    except Exception as exc:
        _say(f"jr_checkpoint.install() failed, running without checkpoints: {type(exc).__name__}: {exc}")


_chain()
_install()
