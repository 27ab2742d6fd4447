"""Text that is safe to show: a value that may refuse ``str()``, an exception on one line, and
secrets masked before any message, repr or chained cause can hold them."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from typing import Any

MASK = "********"


def safe_text(value: Any) -> str:
    """``str(value)``, or a description of it when even that fails (hostile objects)."""
    try:
        return str(value)
    except Exception:
        try:
            return f"<{type(value).__name__} that cannot be shown>"
        except Exception:
            return "<unprintable>"


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {safe_text(exc)}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def secret_spellings(values: Iterable[str]) -> list[str]:
    """Each secret as given and percent-encoded (as a URI holds it), the longest first."""
    spellings = set()
    for value in values:
        spellings.update({value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value)})
    return sorted(spellings - {""}, key=len, reverse=True)  # the longest first: no partial masks


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by a mask."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def redacted(exc: BaseException, secrets: Iterable[str] = (), text: str | None = None) -> BaseException:
    """A stand-in for ``exc`` to chain from: its type, its text with the secrets masked, no chain.

    The original's own ``__cause__``/``__context__`` and attributes (psycopg2's ``pgerror``,
    ``diag``) are left behind, since any of them may quote the secret.
    """
    message = scrub(str(exc) if text is None else text, secrets)
    try:
        copy = type(exc)(message)
    except Exception:  # an exception type whose constructor wants more than a message
        copy = RuntimeError(f"{type(exc).__name__}: {message}")
    return copy


__all__ = ["MASK", "describe_error", "first_line", "redacted", "safe_text", "scrub", "secret_spellings"]
