"""The one way a test waits for something it cannot be told about: poll, with a deadline.

A handshake (a pipe, a line, a lock) is better where the code under test can give one; where
it cannot (a flag file a shell step touches, a row in pg_stat_activity, a journal line), the
test polls through :func:`wait_until`, so that every wait has a deadline and a stuck wait fails
in one line naming what it waited for, instead of hanging until the per-test timeout.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.02,
               alive: subprocess.Popen | None = None) -> T:
    """Poll ``predicate`` until it returns a true value (returned) or ``timeout`` passes (the
    test fails, naming ``what``). With ``alive``, fail at once, with that process's output,
    if it exits first: what it was to do will not happen any more."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            out, err = alive.communicate()
            pytest.fail(f"pid {alive.pid} exited with {alive.returncode} while waiting for {what}: "
                        f"stdout {out!r}, stderr {err!r}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        time.sleep(poll)
