"""Where the library's lines go: the host's logging when it has any, else its output.

The Jr worker never configures ``logging``; everything it says is a ``print`` to the
service's journal, and so were the seed's ``[CHECKPOINT] ...`` lines. So a line goes
through ``logging`` (once) when a handler would receive it, and is printed to stdout,
as the seed printed it, when none would.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def emit(logger: logging.Logger, level: int, message: str, *args: Any, **extra: Any) -> None:
    """Log ``message % args`` with ``extra``, or print it when logging is not configured."""
    if logger.hasHandlers():
        logger.log(level, message, *args, extra=extra)
        return
    try:
        text = message % args if args else message
        print(text, file=sys.stdout, flush=True)
    except Exception:  # a closed or broken stdout must never reach the host
        pass


__all__ = ["emit"]
