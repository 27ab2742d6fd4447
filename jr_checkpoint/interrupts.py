"""Signals end a command in order, and at once: Ctrl-C, SIGTERM (timeout, CI), SIGHUP (a closed terminal).

SIGTERM and SIGHUP unwind like Ctrl-C, so that an embedded server is stopped; a signal
already ignored (``nohup``) stays ignored. Python runs a handler only between bytecodes of
the main thread, so inside a C call (libpq's connect waits out its whole timeout) the signal
would wait too: the C-level handler writes it to a wakeup fd at once, and a watchdog thread
ends the command if the handler has not run ``GRACE`` seconds later, except while an
embedded server runs (see :func:`serving`), which must be stopped however long that takes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

GRACE = 0.5  # seconds a signal may wait for Python's handler before the watchdog ends the command
_SERVING = threading.Event()


class Stopped(BaseException):
    """SIGTERM or SIGHUP: unwinds like KeyboardInterrupt, so that ``finally`` blocks run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def describe(signum: int) -> str:
    """What the command says when a signal ends it."""
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


@contextlib.contextmanager
def serving() -> Iterator[None]:
    """While an embedded server runs: no forced exit, the command must unwind and stop it."""
    _SERVING.set()
    try:
        yield
    finally:
        _SERVING.clear()


@contextlib.contextmanager
def ending_on_signals(say: Callable[[str], None]) -> Iterator[None]:
    """Install the handlers and the watchdog for the block; ``say`` tells the user."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        handled.set()
        raise KeyboardInterrupt

    def stop(signum: int, frame: object) -> None:
        handled.set()
        signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
        raise Stopped(signum)

    previous = {}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, stop)
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    wakeup = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch, args=(reader, set(previous), handled, say), daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(wakeup)
        os.close(writer)  # the watchdog reads the end of the pipe, and returns
        watchdog.join()
        os.close(reader)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _watch(reader: int, signals: set[int], handled: threading.Event, say: Callable[[str], None]) -> None:
    while data := os.read(reader, 64):
        for signum in data:
            if signum in signals and not handled.wait(GRACE) and not _SERVING.is_set():
                say(describe(signum))
                os._exit(128 + signum)


__all__ = ["GRACE", "Stopped", "describe", "ending_on_signals", "serving"]
